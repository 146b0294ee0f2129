"""Tests for the server round loop: screening replies, aggregation, checkpoints, resume."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message
from flwr.app.error import Error
from flwr.superlink.grid.http_grid import HttpGrid

from common.config import RunConfig
from common.evaluation import measure_privacy_and_utility
from common.model import build_model
from common.packing import INDEX, pack
from common.weights import shareable_state
from server import federation
from server.checkpoints import load_checkpoint
from server.federation import run_federation, screen_replies, site_of
from tests.fakes import (
    D,
    LoopbackGrid,
    Site,
    evaluation_set,
    small_config,
    train_reply,
    train_request,
    without_timings,
)

EXPECTED = shareable_state(build_model(D, RunConfig(), seed=0))
NAME = list(EXPECTED)[2]


def _with(**changes) -> dict[str, np.ndarray]:
    return dict(EXPECTED) | changes


def _error_reply() -> Message:
    return Message(Error(code=0, reason="site crashed"), reply_to=train_request(9))


def _reply_with_extra_record() -> Message:
    reply = train_reply(EXPECTED, 9)
    reply.content["debug"] = ConfigRecord({"note": "x"})
    return reply


def _packed_reply(tamper: bool) -> Message:
    reply = train_reply(EXPECTED, 9)
    reply.content = pack(reply.content)
    if tamper:  # the index claims one byte more than the packed array holds
        index = json.loads(reply.content.config_records[INDEX]["index"])
        index["arrays"][-1][5] += 1
        reply.content[INDEX] = ConfigRecord({"index": json.dumps(index)})
    return reply


REJECTIONS = {
    "wrong shape": (lambda: train_reply(_with(**{NAME: np.zeros((3, 3), np.float32)}), 9),
                    ["has shape", NAME]),
    "wrong dtype": (lambda: train_reply(_with(**{NAME: EXPECTED[NAME].astype(np.float64)}), 9),
                    ["has dtype", NAME]),
    "non-finite": (lambda: train_reply(_with(**{NAME: np.full_like(EXPECTED[NAME], np.nan)}), 9),
                   ["non-finite", NAME]),
    "encoder weights": (
        lambda: train_reply(_with(**{"encoder.conv.weight": np.zeros(3, np.float32)}), 9),
        ["encoder.conv.weight"],
    ),
    "missing array": (lambda: train_reply({k: v for k, v in EXPECTED.items() if k != NAME}, 9),
                      ["missing", NAME]),
    "no num-examples": (lambda: train_reply(EXPECTED, 9, {"loss": 1.0}), ["num-examples"]),
    "zero num-examples": (lambda: train_reply(EXPECTED, 9, {"num-examples": 0}), ["num-examples"]),
    "error reply": (_error_reply, ["site crashed"]),
    "unknown record": (_reply_with_extra_record, ["debug"]),
    "malformed packing": (lambda: _packed_reply(tamper=True), ["lies outside its bytes"]),
}  # fmt: skip


def test_a_packed_reply_is_screened_as_the_arrays_it_holds():
    accepted, rejected = screen_replies([_packed_reply(tamper=False)], EXPECTED)
    assert not rejected and len(accepted) == 1
    arrays = accepted[0].content.array_records["arrays"]
    assert list(arrays) == list(EXPECTED)
    assert all(np.array_equal(arrays[k].numpy(), v) for k, v in EXPECTED.items())


@pytest.mark.parametrize("cause", list(REJECTIONS))
def test_screen_replies_leaves_out_a_bad_update_and_says_why(cause):
    make_bad, words = REJECTIONS[cause]
    replies = [train_reply(EXPECTED, 1), make_bad(), train_reply(EXPECTED, 8)]
    accepted, rejected = screen_replies(replies, EXPECTED)
    assert [r.metadata.src_node_id for r in accepted] == [1, 8]
    assert [entry["node"] for entry in rejected] == [9]
    for word in words:
        assert word in rejected[0]["reason"]


def test_metric_keys_that_differ_between_sites_are_rejected():
    replies = [train_reply(EXPECTED, 1), train_reply(EXPECTED, 2, {"num-examples": 5, "x": 1.0})]
    accepted, rejected = screen_replies(replies, EXPECTED)
    assert [r.metadata.src_node_id for r in accepted] == [1]
    assert "differ" in rejected[0]["reason"]


def test_replies_are_ordered_by_the_site_they_name_not_by_node_id():
    first, second = train_reply(EXPECTED, 1), train_reply(EXPECTED, 2)
    first.content["site"] = ConfigRecord({"id": "site_07"})
    second.content["site"] = ConfigRecord({"id": "site_02"})
    assert sorted([site_of(first), site_of(second)]) == ["site_02", "site_07"]
    assert site_of(train_reply(EXPECTED, 5)) == "node-5"  # a reply that names no site


def test_aggregation_does_not_depend_on_the_order_sites_answer_in(tmp_path):
    config = small_config(rounds=2)
    runs = []
    for name, order in (("forward", [1, 2, 3]), ("backward", [3, 2, 1])):
        sites = {n: Site(n, config) for n in (1, 2, 3)}
        grid = LoopbackGrid(sites, order=order)
        runs.append(run_federation(grid, config, tmp_path / name, evaluation_set()))
    for name, array in runs[0].arrays.items():
        np.testing.assert_array_equal(runs[1].arrays[name], array)


def test_a_malformed_update_is_left_out_and_the_round_completes(tmp_path):
    config = small_config(rounds=2)
    sites = {1: Site(1, config), 2: Site(2, config, corrupt="nan"), 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    assert state.round == 2
    for record in state.history.rounds[1:]:
        assert record.sites_aggregated == 2
        assert [r["node"] for r in record.sites_rejected] == [2]
        assert "non-finite" in record.sites_rejected[0]["reason"]
    # FedAvg of the two honest sites, weighted by their example counts, computed by hand.
    weights = {1: 16, 3: 24}
    for name, array in state.arrays.items():
        expected = sum(weights[n] * sites[n].last_arrays[name] for n in weights) / sum(
            weights.values()
        )
        np.testing.assert_allclose(array, expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.concatenate([a.ravel() for a in state.arrays.values()])).all()
    # The evaluation of the last round ran, and the report's rejected list names the site.
    assert state.history.rounds[-1].evaluation is not None
    assert len(state.history.rejected) == 2


def test_round_zero_evaluates_the_identity_adapter_as_the_raw_baseline(tmp_path):
    config = small_config(rounds=1)
    sites = {n: Site(n, config) for n in (1, 2, 3)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    raw = measure_privacy_and_utility(evaluation_set(), None, config)
    assert without_timings(state.history.baseline) == without_timings(raw)
    assert state.history.rounds[0].evaluation is state.history.baseline


def test_with_an_output_bottleneck_the_baseline_is_raw_and_round_zero_is_never_shipped(
    tmp_path,
):
    config = small_config(rounds=1, extra=["anonymizer.bottleneck=4"])
    sites = {n: Site(n, config) for n in (1, 2, 3)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    raw = measure_privacy_and_utility(evaluation_set(), None, config)
    assert without_timings(state.history.baseline) == without_timings(raw)
    # The untrained bottleneck is not evaluated and never selected: round 1 is.
    assert state.history.rounds[0].evaluation is None
    assert state.history.selected_round == 1


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
    assert saved.trainer_state, "the strategy's moments / momentum were not saved"

    resumed = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}),
        config,
        tmp_path / "b",
        evaluation_set(),
        resume=True,
    )
    assert [r.round for r in resumed.history.rounds] == [0, 1, 2, 3, 4]
    # Two identical runs differ by ~3e-7 here (float rounding in CPU kernels depends on memory
    # alignment); a resume that lost the strategy state is off by 8e-5 (FedAvgM) to 3e-3 (FedAdam).
    for name in straight.arrays:
        np.testing.assert_allclose(resumed.arrays[name], straight.arrays[name], rtol=0, atol=1e-5)
    # The selection (round and arrays) survives the interruption too.
    assert resumed.history.selected_round == straight.history.selected_round
    for name in straight.selected:
        np.testing.assert_allclose(resumed.selected[name], straight.selected[name], atol=1e-5)
    for name in straight.trainer_state:
        np.testing.assert_allclose(
            resumed.trainer_state[name], straight.trainer_state[name], rtol=0, atol=1e-5
        )


def test_extend_run_points_an_interrupted_run_to_resume_and_refuses_a_stopped_one(tmp_path):
    from common.config import save_config
    from common.layout import RunLayout
    from server.checkpoints import save_checkpoint
    from simulations.simulate import SimulationError, extend_run

    config = small_config(rounds=4)
    save_config(config, RunLayout(tmp_path).config)
    interrupted = {n: Site(n, config, fail_round=3) for n in (1, 2, 3)}
    with pytest.raises(KeyboardInterrupt):
        run_federation(LoopbackGrid(interrupted), config, tmp_path, evaluation_set())
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SimulationError, match="4 rounds planned and 2 done; continue it with"):
        extend_run(tmp_path, 4)
    assert extend_run(tmp_path, 6).federation.rounds == 6
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files  # untouched

    state = load_checkpoint(tmp_path)
    state.history.stopped = "stopped before round 3: too few sites"
    save_checkpoint(tmp_path, state)
    with pytest.raises(SimulationError, match="too few sites; it cannot go on"):
        extend_run(tmp_path, 6)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    from server.checkpoints import CheckpointError

    config = small_config()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_federation(
            LoopbackGrid({1: Site(1, config)}), config, tmp_path, evaluation_set(), resume=True
        )


class _DeployedGrid(HttpGrid):
    """Flower's deployment Grid with the SuperLink replaced: replies become ready at pulls."""

    def __init__(self, ready_at: dict[str, int]) -> None:  # no SuperLink connection
        self.ready_at, self.pulls = ready_at, 0

    def push_messages(self, messages):
        return [f"m{k}" for k, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        self.pulls += 1
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
            for i in message_ids
            if self.ready_at[i] == self.pulls
        ]


def test_a_deployed_round_collects_replies_as_they_come_and_stops_at_its_timeout(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(federation.time, "sleep", slept.append)
    messages = [train_request(node) for node in (1, 2, 3)]
    ids = ["m0", "m1", "m2"]
    grid = _DeployedGrid({ids[0]: 1, ids[1]: 3, ids[2]: 3})
    replies = federation.send_and_receive(grid, messages, timeout=60)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(ids)
    assert grid.pulls == 3 and slept == [federation.REPLY_POLL_SECONDS] * 2  # none after
    # a site that never answers: the round ends at its timeout with the others' replies
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(federation.time, "monotonic", lambda: next(clock))
    grid = _DeployedGrid({ids[0]: 1, ids[1]: 2, ids[2]: 10**6})
    replies = federation.send_and_receive(grid, messages, timeout=35)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(ids[:2])
