"""The task interface: what a downstream task (action recognition, temporal action detection,
anomaly detection, ...) brings to training, to central evaluation and to the report.

A task is one module that subclasses `Task` and registers an instance:

    @TASKS.register("ar")
    class ActionRecognition(Task): ...

Training, the site data, the evaluation set and the report iterate over the configured tasks
(`tasks.seen`, `tasks.evaluated`); nothing else names a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from common.registry import Registry

if TYPE_CHECKING:
    from common.config import EvaluationConfig, RunConfig


@dataclass(frozen=True)
class TaskSplit:
    """One split of a task's videos: each video's non-overlapping clip features in order
    (N, C, d), anonymized or raw, and its labels (name -> (N, ...) array)."""

    clips: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.clips)


@dataclass(frozen=True)
class TaskScore:
    """A task's central evaluation: its metric on test (with a standard error) and on val (the
    only number selection may look at), in percent."""

    test: float
    test_se: float
    val: float
    num_test: int
    # Standard error of `test` minus the raw features' test metric on the SAME test videos
    # (paired): set by the central evaluator once it has the baseline, None otherwise.
    change_se: float | None = None
    # The test metric on subsets of the test videos, by name (AD: each anomaly kind's videos
    # with every normal one), where the task and its labels know them; empty otherwise.
    by_kind: dict[str, float] = field(default_factory=dict, hash=False)
    # Per-test-video outputs (predictions, detections, scores) that pair two scores; not
    # saved and not compared.
    test_outputs: Any = field(default=None, compare=False, repr=False)


class Task(ABC):
    """One downstream task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]  # registry name and the key of its head, data and metrics ("ar")
    dataset: ClassVar[str]  # the manifest folder of its videos at a site and centrally ("ar")
    metric: ClassVar[str]  # its metric's short name ("top1"): report keys are <name>_<metric>
    title: ClassVar[str]  # how the report names the metric ("AR top-1")
    # Whether training sees a video's whole clip sequence (its labels are placed in time over
    # the whole video: detection) or a random window of `anonymizer.window` clips of it (a
    # label of the video as a whole: recognition). Either way the adapter anonymizes the
    # sequence in windows, as a deployment does.
    whole_video: ClassVar[bool] = False

    # Keys of the report's metric entries, derived from name and metric.
    @property
    def test_key(self) -> str:
        return f"{self.name}_{self.metric}"

    @property
    def val_key(self) -> str:
        return f"{self.name}_val_{self.metric}"

    @abstractmethod
    def labels(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The labels this task trains and evaluates on, from one manifest entry."""

    @abstractmethod
    def build_head(self, dim: int, config: RunConfig) -> nn.Module:
        """The head co-trained with the adapter at a site: (B, T, d) features -> outputs."""

    @abstractmethod
    def loss(
        self,
        head: nn.Module,
        anonymized: torch.Tensor,
        labels: dict[str, torch.Tensor],
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The task's training loss on a batch of anonymized sequences (B, T, d)."""

    def budget_groups(self, labels: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B,) group of each video for `loss.budget_negatives=same_action`: the privacy
        budget's negatives are then the videos of the same group. None = no grouping."""
        return None

    def action_clips(
        self, clips: np.ndarray, labels: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The clips of these videos (N, C, d) that show one action, as features (M, d) and
        their action classes (M,): what this task's videos add to the linear discriminant's
        moments (common.discriminant). None if this task's labels name no action."""
        return None

    def change_standard_error(
        self, score: TaskScore, baseline: TaskScore, test_labels: dict[str, np.ndarray]
    ) -> float | None:
        """Standard error of score.test - baseline.test, both measured on the same test videos
        (`test_labels`), from the per-video `test_outputs` both keep (the evaluator calls it
        only when they do); None if this task cannot."""
        return None

    def check_splits(self, labels: dict[str, dict[str, np.ndarray]]) -> None:
        """Raise a LatentveilError that says what to change if the central protocol cannot run
        on these splits (split -> its labels). Called before any training, so that a run
        fails at the start rather than at its first evaluation."""
        return None

    @abstractmethod
    def site_metric(
        self, head: nn.Module, anonymized: torch.Tensor, labels: dict[str, torch.Tensor]
    ) -> float:
        """The metric of the co-trained head on a site's anonymized videos (N, C, d)."""

    @abstractmethod
    def evaluate(
        self,
        splits: dict[str, TaskSplit],
        classes: tuple[str, ...],
        config: EvaluationConfig,
    ) -> TaskScore:
        """The central protocol: a FRESH downstream model trained on `splits["train"]`,
        selected on "val", scored once on "test"."""


TASKS: Registry[Task] = Registry("task")


def get_task(name: str) -> Task:
    """The task registered as `name` (an unknown name lists the registered ones)."""
    return TASKS.get(name)
