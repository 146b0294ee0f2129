"""Tests for the server round loop: screening replies, aggregation, checkpoints, resume."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error

from common.config import RunConfig, load_config
from common.evaluation import EvaluationSet, Split, VideoSplit
from common.model import build_model
from common.training import train_local
from common.weights import load_shareable, shareable_state
from server.checkpoints import load_checkpoint
from server.federation import run_federation, screen_replies
from tests.server.conftest import LoopbackGrid

D = 16


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
    rng = np.random.default_rng(seed)

    def attributes(n):
        labels = (rng.random((n, 7)) < 0.4).astype(np.float32)
        labels[0] = 1
        return labels

    def stills(n):
        return Split(rng.normal(size=(n, D)).astype(np.float32), attributes(n))

    def videos(n):
        clips = rng.normal(size=(n, 2, D)).astype(np.float32)
        return VideoSplit(clips, rng.integers(0, 8, n), attributes(n))

    return EvaluationSet(
        "test-encoder",
        tuple(f"a{i}" for i in range(7)),
        tuple(f"c{i}" for i in range(8)),
        {s: stills(n) for s, n in (("train", 40), ("val", 20), ("test", 20))},
        {s: videos(n) for s, n in (("train", 40), ("val", 16), ("test", 16))},
    )


def site_tensors(node: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(node)
    n = 12 + 4 * node
    return {
        "clip_features": torch.randn(n, 2, D, generator=gen),
        "static_features": torch.randn(n, 2, D, generator=gen),
        "actions": torch.randint(0, 8, (n,), generator=gen),
    }


class Site:
    """A camera site in this process: trains on its random features like the ClientApp does."""

    def __init__(
        self,
        node: int,
        config: RunConfig,
        corrupt: str | None = None,
        fail_round: int | None = None,
    ):
        self.node, self.config, self.corrupt, self.fail_round = node, config, corrupt, fail_round
        self.last_arrays: dict[str, np.ndarray] | None = None
        self.tensors = site_tensors(node)

    def __call__(self, message: Message) -> Message:
        server_round = int(message.content.config_records["config"]["server-round"])
        if server_round == self.fail_round:
            raise KeyboardInterrupt("the server was stopped")
        model = build_model(D, self.config, seed=0)
        load_shareable(
            model, {k: v.numpy() for k, v in message.content.array_records["arrays"].items()}
        )
        metrics = train_local(
            model,
            self.tensors,
            self.config.train,
            self.config.loss,
            seed=server_round * 10 + self.node,
            window=self.config.anonymizer.window,
        )
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
                    {**metrics, "num-examples": len(self.tensors["actions"]), "seconds": 0.1}
                ),
            }
        )
        return Message(content, reply_to=message)


def request(node: int) -> Message:
    from flwr.app import ConfigRecord

    return Message(
        RecordDict({"config": ConfigRecord({"server-round": 1})}),
        dst_node_id=node,
        message_type="train",
    )


def reply_with(arrays: dict[str, np.ndarray], node: int, metrics: dict | None = None) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics if metrics is not None else {"num-examples": 5}),
        }
    )
    return Message(content, reply_to=request(node))


def test_screen_replies_keeps_good_updates_and_names_what_is_wrong_with_the_others():
    expected = shareable_state(build_model(D, RunConfig(), seed=0))
    name = list(expected)[2]
    bad_shape = dict(expected) | {name: np.zeros((3, 3), np.float32)}
    bad_dtype = dict(expected) | {name: expected[name].astype(np.float64)}
    nan = dict(expected) | {name: np.full_like(expected[name], np.nan)}
    extra = dict(expected) | {"encoder.conv.weight": np.zeros(3, np.float32)}
    missing = {k: v for k, v in expected.items() if k != name}
    error = Message(Error(code=0, reason="site crashed"), reply_to=request(9))
    replies = [
        reply_with(expected, 1),
        reply_with(bad_shape, 2),
        reply_with(bad_dtype, 3),
        reply_with(nan, 4),
        reply_with(extra, 5),
        reply_with(missing, 6),
        reply_with(expected, 7, {"loss": 1.0}),
        reply_with(expected, 8),
        error,
    ]
    accepted, rejected = screen_replies(replies, expected)
    assert [r.metadata.src_node_id for r in accepted] == [1, 8]
    reasons = {entry["node"]: entry["reason"] for entry in rejected}
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 9}
    assert "has shape" in reasons[2] and name in reasons[2]
    assert "has dtype" in reasons[3] and name in reasons[3]
    assert "non-finite" in reasons[4] and name in reasons[4]
    assert "encoder.conv.weight" in reasons[5]
    assert "missing" in reasons[6] and name in reasons[6]
    assert "num-examples" in reasons[7]
    assert "site crashed" in reasons[9]


def test_a_malformed_update_is_left_out_and_the_round_completes(tmp_path):
    config = small_config(rounds=2)
    sites = {1: Site(1, config), 2: Site(2, config, corrupt="nan"), 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    assert state.round == 2
    for record in state.history["rounds"][1:]:
        assert record["sites_aggregated"] == 2
        assert [r["node"] for r in record["sites_rejected"]] == [2]
        assert "non-finite" in record["sites_rejected"][0]["reason"]
    # FedAvg of the two honest sites, weighted by their example counts, computed by hand.
    weights = {1: 16, 3: 24}
    for name, array in state.arrays.items():
        expected = sum(weights[n] * sites[n].last_arrays[name] for n in weights) / sum(
            weights.values()
        )
        np.testing.assert_allclose(array, expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.concatenate([a.ravel() for a in state.arrays.values()])).all()
    # The evaluation of the last round ran, and the report's rejected list names the site.
    assert "evaluation" in state.history["rounds"][-1]
    assert len(state.history["rejected"]) == 2


def test_round_zero_evaluates_the_identity_adapter_as_the_raw_baseline(tmp_path):
    from common.evaluation import measure_privacy_and_utility

    config = small_config(rounds=1)
    sites = {n: Site(n, config) for n in (1, 2, 3)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    raw = measure_privacy_and_utility(
        evaluation_set(), None, config.evaluation, config.anonymizer.window
    )
    assert without_timings(state.history["baseline"]) == without_timings(raw)
    assert state.history["rounds"][0]["evaluation"] is state.history["baseline"]


def test_with_an_output_bottleneck_the_baseline_is_raw_and_round_zero_is_never_shipped(
    tmp_path,
):
    from common.evaluation import measure_privacy_and_utility

    config = small_config(rounds=1, extra=["anonymizer.bottleneck=4"])
    sites = {n: Site(n, config) for n in (1, 2, 3)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    raw = measure_privacy_and_utility(
        evaluation_set(), None, config.evaluation, config.anonymizer.window
    )
    assert without_timings(state.history["baseline"]) == without_timings(raw)
    # The untrained bottleneck is not evaluated and never selected: round 1 is.
    assert "evaluation" not in state.history["rounds"][0]
    assert state.history["selected_round"] == 1


def without_timings(evaluation: dict) -> dict:
    """An evaluation without the attackers' wall times (the only part that may differ)."""
    out = dict(evaluation)
    out["privacy_attackers"] = {
        protocol: {
            name: {k: v for k, v in entry.items() if k != "seconds"}
            for name, entry in attackers.items()
        }
        for protocol, attackers in evaluation["privacy_attackers"].items()
    }
    return out


@pytest.mark.parametrize("strategy", ["fedadam", "fedavgm"])
def test_resume_continues_from_the_last_complete_round_with_the_strategy_state(tmp_path, strategy):
    momentum = ["federation.server_momentum=0.9"] if strategy == "fedavgm" else []
    # Window 1: with attention over 2-clip sequences, two identical straight runs already differ
    # by ~1e-5 after four FedAdam rounds (its per-parameter normalisation amplifies rounding in
    # the near-zero branches); with lone clips they differ by ~4e-7, far below what a lost
    # strategy state costs, which is what this test must tell apart.
    config = small_config(strategy, rounds=4, extra=[*momentum, "anonymizer.window=1"])
    straight = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}),
        config,
        tmp_path / "a",
        evaluation_set(),
    )

    interrupted = {n: Site(n, config, fail_round=3) for n in (1, 2, 3)}
    with pytest.raises(KeyboardInterrupt):
        run_federation(LoopbackGrid(interrupted), config, tmp_path / "b", evaluation_set())
    saved = load_checkpoint(tmp_path / "b")
    assert saved.round == 2
    assert saved.strategy_state, "the strategy's moments / momentum were not saved"

    resumed = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}),
        config,
        tmp_path / "b",
        evaluation_set(),
        resume=True,
    )
    assert [r["round"] for r in resumed.history["rounds"]] == [0, 1, 2, 3, 4]
    # Two identical runs differ by ~3e-7 here (float rounding in CPU kernels depends on memory
    # alignment); a resume that lost the strategy state is off by 8e-5 (FedAvgM) to 3e-3 (FedAdam).
    for name in straight.arrays:
        np.testing.assert_allclose(resumed.arrays[name], straight.arrays[name], rtol=0, atol=1e-5)
    # The selection (round and arrays) survives the interruption too.
    assert resumed.history["selected_round"] == straight.history["selected_round"]
    for name in straight.selected:
        np.testing.assert_allclose(resumed.selected[name], straight.selected[name], atol=1e-5)
    for name in straight.strategy_state:
        np.testing.assert_allclose(
            resumed.strategy_state[name], straight.strategy_state[name], rtol=0, atol=1e-5
        )


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    from server.checkpoints import CheckpointError

    config = small_config()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_federation(
            LoopbackGrid({1: Site(1, config)}), config, tmp_path, evaluation_set(), resume=True
        )
