"""What real sites do to a round, on the real round loop and strategies: drop out and come
back, send arrays outside the allow-list, send compressed updates; and differential privacy's
accountant across rounds, a spent budget and a resume."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.app.error import Error
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

from common import wire
from common.compression import encode
from server.checkpoints import load_checkpoint
from server.federation import run_federation
from server.rounds import finish_run
from tests.fakes import LoopbackGrid, Site, evaluation_set, small_config


class Flaky:
    """A site that does not answer in the given rounds (it dropped out)."""

    def __init__(self, site, absent_rounds):
        self.site, self.absent = site, set(absent_rounds)

    def __call__(self, message):
        server_round = int(message.content.config_records["config"]["server-round"])
        return None if server_round in self.absent else self.site(message)


class Offline:
    """A site whose SuperNode Flower marked offline in the given rounds: the SuperLink answers
    for it with a NODE_UNAVAILABLE error, from its own node id."""

    def __init__(self, site, offline_rounds):
        self.site, self.offline = site, set(offline_rounds)

    def __call__(self, message):
        if message.metadata.message_type == "query":
            return self.site(message)
        server_round = int(message.content.config_records["config"]["server-round"])
        if server_round not in self.offline:
            return self.site(message)
        reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "node offline"), reply_to=message)
        reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
        return reply


class Leaky:
    """A site without the audit mod that adds its encoder's weights to its reply."""

    def __init__(self, site):
        self.site = site

    def __call__(self, message):
        reply = self.site(message)
        if message.metadata.message_type == "query":
            return reply
        reply.content.array_records["arrays"]["encoder.conv.weight"] = Array(np.ones(3, np.float32))
        return reply


class Compressing:
    """A site that sends its update as compressed_mod does."""

    def __init__(self, site, method):
        self.site, self.method = site, method

    def __call__(self, message):
        if message.metadata.message_type == "query":
            return self.site(message)
        received = {k: a.numpy() for k, a in message.content.array_records["arrays"].items()}
        reply = self.site(message)
        trained = {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}
        payload, scales = encode(trained, received, self.method)
        reply.content["arrays"] = ArrayRecord({k: Array(v) for k, v in payload.items()})
        reply.content["scales"] = ArrayRecord({k: Array(v) for k, v in scales.items()})
        reply.content["compression"] = ConfigRecord({"method": self.method})
        return reply


def test_a_site_that_drops_out_is_reported_and_rejoins_at_the_next_round(tmp_path):
    config = small_config(rounds=3, extra=["federation.min_sites=2"])
    sites = {1: Site(1, config), 2: Flaky(Site(2, config), {2}), 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    rounds = state.history.rounds
    assert [r.sites_aggregated for r in rounds[1:]] == [3, 2, 3]
    assert rounds[1].sites_dropped == []
    assert [(e["site"], e["round"]) for e in rounds[2].sites_dropped] == [("site_02", 2)]
    assert "round_timeout" in rounds[2].sites_dropped[0]["reason"]
    statuses = {e["site"]: e["status"] for e in rounds[2].sites}
    assert statuses == {"site_01": "aggregated", "site_02": "dropped", "site_03": "aggregated"}
    report = finish_run(config, tmp_path, state.history, state.arrays, 1.0)
    import json

    data = json.loads(report.read_text())
    assert [(e["site"], e["round"]) for e in data["dropped_sites"]] == [("site_02", 2)]
    assert "## Sites that dropped out" in (tmp_path / "report.md").read_text()


def test_a_site_flower_reports_offline_is_dropped_with_flowers_reason(tmp_path):
    # Measured in a deployment: the SuperLink's NODE_UNAVAILABLE reply carries its own node id,
    # and was reported as the site's silence until the round timeout.
    config = small_config(rounds=2, extra=["federation.min_sites=2"])
    sites = {1: Site(1, config), 2: Offline(Site(2, config), {2}), 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    dropped = state.history.rounds[2].sites_dropped
    assert [(e["site"], e["round"]) for e in dropped] == [("site_02", 2)]
    assert "Flower reports the node unavailable: node offline" in dropped[0]["reason"]
    assert state.history.rounds[2].sites_aggregated == 2


def test_an_array_outside_the_allowlist_is_refused_by_the_server_and_reported(tmp_path):
    config = small_config(rounds=1)
    sites = {1: Site(1, config), 2: Leaky(Site(2, config)), 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    record = state.history.rounds[1]
    assert record.sites_aggregated == 2
    assert "encoder.conv.weight" in record.sites_rejected[0]["reason"]
    entries = wire.read(tmp_path / "wire.jsonl")
    ups = [e for e in entries if e["direction"] == "up"]
    assert {e["site"]: e["outside_allowlist"] for e in ups} == {
        "site_01": [],
        "site_02": ["encoder.conv.weight"],
        "site_03": [],
    }
    summary = wire.summarize(entries, None)
    assert summary["outside_allowlist_received"] == ["encoder.conv.weight"]
    assert summary["outside_allowlist_left_a_site"] is True
    finish_run(config, tmp_path, state.history, state.arrays, 1.0)
    assert "**YES: an array outside" in (tmp_path / "report.md").read_text()


def test_the_wire_record_counts_every_message_and_the_report_says_nothing_left(tmp_path):
    config = small_config(rounds=2)
    state = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path, evaluation_set()
    )
    entries = wire.read(tmp_path / "wire.jsonl")
    assert len(entries) == 2 * 3 * 2  # rounds x sites x (down, up)
    assert {e["site"] for e in entries} == {"site_01", "site_02", "site_03"}
    for record in state.history.rounds[1:]:
        assert record.bytes_up == sum(e["bytes_up"] for e in record.sites) > 0
        assert record.bytes_down == sum(e["bytes_down"] for e in record.sites) > 0
    finish_run(config, tmp_path, state.history, state.arrays, 1.0)
    text = (tmp_path / "report.md").read_text()
    assert "no array outside the shareable allow-list left any site" in text


@pytest.mark.parametrize("method", ["fp16", "int8", "int8-channel"])
def test_compressed_updates_are_decoded_and_aggregate_close_to_uncompressed(tmp_path, method):
    config = small_config(rounds=2)
    plain = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path / "a",
        evaluation_set(),
    )  # fmt: skip
    compressed = run_federation(
        LoopbackGrid({n: Compressing(Site(n, config), method) for n in (1, 2, 3)}),
        config,
        tmp_path / "b",
        evaluation_set(),
    )
    assert all(r.sites_aggregated == 3 for r in compressed.history.rounds[1:])
    pairs = zip(plain.history.rounds[1:], compressed.history.rounds[1:], strict=True)
    for record_plain, record in pairs:
        assert record.bytes_up < record_plain.bytes_up
    worst = max(float(np.abs(compressed.arrays[k] - plain.arrays[k]).max()) for k in plain.arrays)
    moved = max(float(np.abs(plain.arrays[k]).max()) for k in plain.arrays)
    assert worst < 0.02 * moved, worst


def test_a_corrupt_compressed_update_is_rejected_with_its_reason(tmp_path):
    config = small_config(rounds=1)

    def corrupt(message):
        reply = Compressing(Site(2, config), "int8")(message)
        if message.metadata.message_type != "query":
            del reply.content["scales"]
        return reply

    sites = {1: Site(1, config), 2: corrupt, 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    record = state.history.rounds[1]
    assert record.sites_aggregated == 2
    assert "needs a float32 scale" in record.sites_rejected[0]["reason"]


DP = ["federation.dp_noise_multiplier=1.0", "federation.dp_clipping_norm=0.5"]


def test_dp_epsilon_grows_with_rounds_and_a_spent_budget_stops_the_run_cleanly(tmp_path):
    config = small_config(rounds=3, extra=DP)
    sites = {n: Site(n, config) for n in (1, 2, 3)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path / "a", evaluation_set())
    epsilons = [r.epsilon for r in state.history.rounds[1:]]
    assert all(e is not None for e in epsilons) and epsilons == sorted(epsilons)
    assert epsilons[0] > 0 and epsilons[2] > epsilons[1] > epsilons[0]
    # a budget between the second and third round's epsilon: two rounds, then a clean stop
    budget = (epsilons[1] + epsilons[2]) / 2
    limited = small_config(rounds=3, extra=[*DP, f"federation.dp_max_epsilon={budget}"])
    sites = {n: Site(n, limited) for n in (1, 2, 3)}
    state = run_federation(LoopbackGrid(sites), limited, tmp_path / "b", evaluation_set())
    assert [r.round for r in state.history.rounds] == [0, 1, 2]
    assert state.history.rounds[-1].evaluation is not None  # the last round trained is evaluated
    assert "privacy budget" in state.history.stopped
    assert state.history.rounds[-1].epsilon == pytest.approx(epsilons[1])
    report = finish_run(limited, tmp_path / "b", state.history, state.arrays, 1.0)
    assert report.is_file()
    text = (tmp_path / "b" / "report.md").read_text()
    assert "The run stopped early" in text and "epsilon" in text


def test_dp_resume_keeps_counting_epsilon(tmp_path):
    config = small_config(rounds=3, extra=DP)
    straight = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path / "a",
        evaluation_set(),
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_federation(
            LoopbackGrid({n: Site(n, config, fail_round=3) for n in (1, 2, 3)}),
            config,
            tmp_path / "b",
            evaluation_set(),
        )
    assert load_checkpoint(tmp_path / "b").round == 2
    resumed = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path / "b",
        evaluation_set(), resume=True,
    )  # fmt: skip
    assert resumed.history.rounds[-1].epsilon == pytest.approx(
        straight.history.rounds[-1].epsilon, rel=1e-9
    )


def test_with_dp_a_round_with_a_dropped_site_releases_nothing_and_spends_nothing(tmp_path):
    config = small_config(rounds=3, extra=[*DP, "federation.min_sites=2"])
    sites = {1: Site(1, config), 2: Flaky(Site(2, config), {2}), 3: Site(3, config)}
    state = run_federation(LoopbackGrid(sites), config, tmp_path, evaluation_set())
    rounds = state.history.rounds
    assert rounds[2].sites_aggregated == 0 and "no release" in rounds[2].note
    assert rounds[2].epsilon == rounds[1].epsilon
    assert rounds[3].epsilon > rounds[2].epsilon and rounds[3].sites_aggregated == 3
