"""An in-process transport for server tests."""

from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.serverapp import Grid


class LoopbackGrid(Grid):
    """Delivers every message to a Python function of its destination node, in this process.

    Only the transport is replaced: the strategies, the round loop and the site functions are
    the real ones. The Simulation Engine itself is exercised by the integration tests.
    """

    def __init__(self, sites: dict[int, Callable[[Message], Message]]) -> None:
        self.sites = sites

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, *args, **kwargs) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return [self.sites[m.metadata.dst_node_id](m) for m in messages]
