"""Test doubles shared by the test packages: an in-process Flower transport, camera sites that
train like the ClientApp, a generated evaluation set and a small config.

Only the transport is replaced: the strategies, the round loop and the site training are the
real ones. The Simulation Engine itself is exercised by the integration tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace
from uuid import uuid4

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from client.mods import packing_mod
from common.attackers import Split
from common.config import RunConfig, load_config
from common.evaluation import Evaluation, EvaluationSet, TaskVideos, VideoSplit
from common.model import build_model
from common.sitedata import SiteData, TaskTensors
from common.training import TaskBatch, TrainingBatch, train_local
from common.weights import load_shareable, shareable_state

D = 16  # feature width of the generated features


class LoopbackGrid(Grid):
    """Delivers every message to a Python function of its destination node, in this process,
    in the order given by `order` (default: node order); a function returning None is a site
    that never answers."""

    def __init__(
        self,
        sites: dict[int, Callable[[Message], Message]],
        order: list[int] | None = None,
    ) -> None:
        self.sites = sites
        self.order = order
        self._run = SimpleNamespace(run_id=0)

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

    def _at_site(self, message: Message) -> Message | None:
        site = self.sites[message.metadata.dst_node_id]
        answered: list[Message | None] = []

        def call_next(msg: Message, context) -> Message:
            answered.append(site(msg))
            return answered[-1] if answered[-1] is not None else Message(RecordDict(), reply_to=msg)

        reply = packing_mod(message, None, call_next)
        return reply if answered[-1] is not None else None

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        # a site function that returns None does not answer (it dropped out); it sees the
        # message through the site's outermost mod, as a ClientApp does (packing); every
        # message gets its id, as Flower's Grids give them
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex
        replies = {m.metadata.dst_node_id: self._at_site(m) for m in messages}
        replies = {node: reply for node, reply in replies.items() if reply is not None}
        order = self.order or sorted(replies)
        return [replies[node] for node in order if node in replies]


def small_config(strategy: str = "fedavg", rounds: int = 2, sites: int = 3, extra=()) -> RunConfig:
    return load_config(
        None,
        [
            *extra,
            f"federation.strategy={strategy}",
            f"federation.rounds={rounds}",
            f"world.sites={sites}",
            "federation.server_lr=0.01",
            "evaluation.every=100",
            "evaluation.attacker_epochs=2",
            "evaluation.attackers=mlp,logistic",
            "evaluation.probe_epochs=2",
            "train.batch_size=8",
            "train.lr=1e-3",
        ],
    )


def evaluation_set(seed: int = 0) -> EvaluationSet:
    """Random features of D dimensions: stills and AR videos (2 clips each) with attributes."""
    rng = np.random.default_rng(seed)

    def attributes(n):
        labels = (rng.random((n, 7)) < 0.4).astype(np.float32)
        labels[0] = 1
        return labels

    def stills(n):
        return Split(rng.normal(size=(n, D)).astype(np.float32), attributes(n))

    def videos(n):
        clips = rng.normal(size=(n, 2, D)).astype(np.float32)
        return VideoSplit(clips, {"action": rng.integers(0, 8, n)}, attributes(n))

    return EvaluationSet(
        "test-encoder",
        tuple(f"a{i}" for i in range(7)),
        {s: stills(n) for s, n in (("train", 40), ("val", 20), ("test", 20))},
        {
            "ar": TaskVideos(
                tuple(f"c{i}" for i in range(8)),
                {s: videos(n) for s, n in (("train", 40), ("val", 16), ("test", 16))},
            )
        },
    )


def site_data(node: int) -> SiteData:
    """A site's random AR features: 12 + 4 * node videos of 2 clips."""
    gen = torch.Generator().manual_seed(node)
    n = 12 + 4 * node
    return {
        "ar": TaskTensors(
            clip_features=torch.randn(n, 2, D, generator=gen),
            static_features=torch.randn(n, 2, D, generator=gen),
            labels={"action": torch.randint(0, 8, (n,), generator=gen)},
        )
    }


def ar_batch(
    clips: torch.Tensor,
    actions: torch.Tensor,
    statics: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> TrainingBatch:
    """A training batch of action-recognition videos only."""
    return TrainingBatch({"ar": TaskBatch(clips, statics, {"action": actions}, mask)})


class Site:
    """A camera site in this process: trains on its random features like the ClientApp does,
    and names itself in its reply as the ClientApp does."""

    def __init__(
        self,
        node: int,
        config: RunConfig,
        corrupt: str | None = None,
        fail_round: int | None = None,
    ):
        self.node, self.config, self.corrupt, self.fail_round = node, config, corrupt, fail_round
        self.last_arrays: dict[str, np.ndarray] | None = None
        self.data = site_data(node)

    def __call__(self, message: Message) -> Message:
        if message.metadata.message_type == "query":  # the server's call before round 1
            site = ConfigRecord({"id": f"site_{self.node:02d}"})
            return Message(RecordDict({"site": site}), reply_to=message)
        server_round = int(message.content.config_records["config"]["server-round"])
        if server_round == self.fail_round:
            raise KeyboardInterrupt("the server was stopped")
        model = build_model(D, self.config, seed=0)
        load_shareable(
            model, {k: v.numpy() for k, v in message.content.array_records["arrays"].items()}
        )
        metrics = train_local(model, self.data, self.config, seed=server_round * 10 + self.node)
        arrays = shareable_state(model)
        if self.corrupt == "nan":
            name = next(iter(arrays))
            arrays[name] = arrays[name].copy()
            arrays[name].flat[0] = np.nan
        self.last_arrays = arrays
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "metrics": MetricRecord(
                    {
                        **metrics,
                        "num-examples": len(self.data["ar"]),
                        "unit-weight": 1.0,
                        "seconds": 0.1,
                    }
                ),
                "site": ConfigRecord({"id": f"site_{self.node:02d}"}),
            }
        )
        return Message(content, reply_to=message)


def train_request(node: int, server_round: int = 1) -> Message:
    """The server's train message to `node` (what a reply answers)."""
    return Message(
        RecordDict({"config": ConfigRecord({"server-round": server_round})}),
        dst_node_id=node,
        message_type="train",
    )


def train_reply(
    arrays: dict[str, np.ndarray],
    node: int,
    metrics: dict | None = None,
    server_round: int = 1,
) -> Message:
    """`node`'s reply to a train message: its trained arrays and its metrics.

    Flower weights an update by its "num-examples" metric; the default metrics give 5.
    """
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics if metrics is not None else {"num-examples": 5}),
        }
    )
    return Message(content, reply_to=train_request(node, server_round))


def without_timings(evaluation: Evaluation) -> dict:
    """An evaluation's JSON without the attackers' wall times (the only part that may differ)."""
    out = evaluation.to_json()
    out["privacy_attackers"] = {
        protocol: {
            name: {k: v for k, v in entry.items() if k != "seconds"}
            for name, entry in attackers.items()
        }
        for protocol, attackers in out["privacy_attackers"].items()
    }
    return out
