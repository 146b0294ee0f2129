"""Downstream tasks behind one interface (common.tasks.base.Task).

Adding a task: write one module here that subclasses `Task` and registers an instance in
`TASKS`, and import it below. Sites then train it when `tasks.seen` names it, and the server
evaluates it when `tasks.evaluated` does.
"""

from common.tasks import (
    action_recognition,  # noqa: F401  (registers "ar")
    anomaly_detection,  # noqa: F401  (registers "ad")
    temporal_detection,  # noqa: F401  (registers "tad")
)
from common.tasks.base import TASKS, Task, TaskScore, TaskSplit, get_task

__all__ = ["TASKS", "Task", "TaskScore", "TaskSplit", "get_task"]
