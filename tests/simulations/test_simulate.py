"""Integration tests of the main job on Flower's Simulation Engine (tiny world, 3 sites)."""

import json

import numpy as np
import pytest

from common.config import load_config
from common.evaluation import EvaluationSet, measure_privacy_and_utility
from common.features import FeatureStore
from server.checkpoints import load_checkpoint
from simulations.cli import main
from tests.paths import CONFIG_DIR

pytestmark = pytest.mark.integration

TINY = [
    "world.preset=tiny",
    "world.sites=3",
    "encoder.path=",  # a random tiny3d: this test is about the pipeline, not the encoder
    "encoder.dim=32",
    "federation.rounds=2",
    "train.epochs=3",
    "train.lr=1e-3",
    "evaluation.attacker_epochs=3",
    "evaluation.probe_epochs=3",
    "evaluation.every=1",
    "loss.cap_budget=true",  # the embedded default's privacy budget (default.yaml)
    "loss.center_budget=true",
    "loss.budget_views=clips",  # its views: moving clips, so the sites encode no static clips
    "loss.budget_surgery=true",  # and its budget surgery
]

REPORT_KEYS = {
    "baseline", "anonymized", "privacy_reduction_rel", "privacy_chance_cmap",
    "privacy_removed_above_chance", "utility_drop", "rounds", "communication", "sites", "config",
    "selection", "last_evaluated", "privacy_attackers", "threat_model",
    "privacy_stills_reduction_rel",
}  # fmt: skip


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("federated")
    args = ["simulate", "--out", str(run), "--quiet", "--config", str(CONFIG_DIR / "tiny.yaml")]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    return run


def test_the_report_holds_the_contract(federated_run):
    report = json.loads((federated_run / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    for side in ("baseline", "anonymized"):
        assert {"privacy_cmap", "ar_top1", "tad_map", "ad_auc"} <= set(report[side])
        assert report[side]["tad_map"] is None and report[side]["ad_auc"] is None
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    for r in report["rounds"][1:]:
        assert r["sites_aggregated"] == 3 and r["bytes_up"] > 0 and r["bytes_down"] > 0
        assert r["seconds"] > 0
        # the share of the sites' local steps whose task gradient the budget surgery changed
        assert 0.0 <= r["budget_conflict"] <= 1.0
    # bytes on the wire: each site's uncompressed update is the float32 arrays as Flower
    # serialises them (payload plus a header per array)
    communication = report["communication"]
    assert communication["wire_bytes_float32"] == report["rounds"][1]["bytes_up"] // 3
    assert 0 < communication["bytes_per_client_per_round"] < communication["wire_bytes_float32"]
    assert report["wire"]["outside_allowlist_left_a_site"] is False
    assert [s["site"] for s in report["sites"]] == ["site_00", "site_01", "site_02"]
    # Every attacker of the suite, on both protocols, raw and anonymized; the headline is the
    # worst case on video.
    for protocol in ("video", "stills"):
        attackers = report["privacy_attackers"][protocol]
        assert set(attackers) == set(report["config"]["evaluation"]["attackers"])
        for entry in attackers.values():
            assert entry["raw"]["test_cmap"] > 0 and entry["anonymized"]["test_cmap"] > 0
    video = report["privacy_attackers"]["video"]
    assert report["anonymized"]["privacy_cmap"] == max(
        e["anonymized"]["test_cmap"] for e in video.values()
    )
    assert report["baseline"]["privacy_cmap"] == max(e["raw"]["test_cmap"] for e in video.values())
    # The reported round is the one chosen on validation numbers, and it is what ships.
    assert report["anonymized"]["round"] == report["selection"]["round"]
    assert report["last_evaluated"]["round"] == 2
    for name in (
        "report.md",
        "privacy_utility_rounds.png",
        "privacy_vs_utility.png",
        "adapter.npz",
    ):
        assert (federated_run / name).is_file(), name


def test_the_stores_hold_no_static_clips_of_videos_when_nothing_reads_them(federated_run):
    with FeatureStore(federated_run / "central.h5") as central:
        assert central.settings.static_clips == 0
    for site in ("site_00", "site_01", "site_02"):
        with FeatureStore(federated_run / "features" / f"{site}.h5") as store:
            assert store.settings.static_clips == 0
            video = store.video_ids()[0]
            assert store.static_features(video).shape == (0, 32)
            assert len(store.clip_features(video)) >= 2


def test_round_zero_is_exactly_the_raw_feature_baseline(federated_run):
    report = json.loads((federated_run / "report.json").read_text())
    config = load_config(federated_run / "config.yaml")
    raw = measure_privacy_and_utility(
        EvaluationSet.load(federated_run / "evaluation_set.npz"), None, config
    ).to_json()
    assert report["baseline"]["privacy_cmap"] == raw["privacy_cmap"]
    assert report["baseline"]["ar_top1"] == raw["ar_top1"]
    assert report["rounds"][0]["privacy_cmap"] == raw["privacy_cmap"]


def test_the_privacy_budget_loss_rises_over_the_rounds(federated_run):
    rounds = json.loads((federated_run / "report.json").read_text())["rounds"]
    assert rounds[2]["loss_b"] > rounds[1]["loss_b"]


def test_centralized_mode_trains_on_the_pooled_data(federated_run, tmp_path):
    # Same world and features (the world folder is reused), pooled training in this process.
    args = ["simulate", "--out", str(tmp_path), "--quiet", "--set", "federation.mode=centralized"]
    args += ["--config", str(CONFIG_DIR / "tiny.yaml")]
    args += ["--set", f"world.dir={federated_run / 'world'}"]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mode"] == "centralized" and report["strategy"] is None
    federated = json.loads((federated_run / "report.json").read_text())
    # Same central evaluation world and encoder: the same raw baseline.
    assert report["baseline"]["privacy_cmap"] == federated["baseline"]["privacy_cmap"]
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert report["anonymized"]["round"] == report["selection"]["round"]
    assert (tmp_path / "adapter.npz").is_file()


def test_extend_to_trains_a_finished_run_on_as_if_it_had_the_rounds_from_the_start(
    federated_run, tmp_path
):
    # Centralized (in this process) and on the federated run's world: the round loop and the
    # CLI path are the same for both modes. Evaluated every 2 rounds (and at the last).
    common = ["--quiet", "--config", str(CONFIG_DIR / "tiny.yaml")]
    common += ["--set", "federation.mode=centralized"]
    common += ["--set", f"world.dir={federated_run / 'world'}"]
    for override in [*TINY, "evaluation.every=2"]:
        common += ["--set", override]
    extended, straight = tmp_path / "extended", tmp_path / "straight"
    assert main(["simulate", "--out", str(extended), *common, "--set", "federation.rounds=1"]) == 0
    before = json.loads((extended / "report.json").read_text())["rounds"]
    assert main(["simulate", "--out", str(straight), *common]) == 0  # 2 rounds
    assert main(["simulate", "--out", str(extended), "--extend-to", "2", "--quiet"]) == 0

    report = json.loads((extended / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert report["last_evaluated"]["round"] == 2
    assert load_config(extended / "config.yaml").federation.rounds == 2
    # It went on from round 1, not over again: round 1's record is the one it had, timings too.
    assert report["rounds"][:2] == before
    # Its old last round stays evaluated; a run with 2 rounds from the start evaluates round 2
    # only (every 2) -- the one way the two differ.
    assert report["rounds"][1]["privacy_cmap"] is not None
    fresh = json.loads((straight / "report.json").read_text())
    assert fresh["rounds"][1]["privacy_cmap"] is None
    ours, theirs = load_checkpoint(extended), load_checkpoint(straight)
    assert ours.round == theirs.round == 2
    for name, array in theirs.arrays.items():
        np.testing.assert_allclose(ours.arrays[name], array, rtol=0, atol=1e-5)
    # Once more to the same length is refused, and the run is left as it was.
    kept = (extended / "report.json").read_bytes()
    assert main(["simulate", "--out", str(extended), "--extend-to", "2", "--quiet"]) == 2
    assert (extended / "report.json").read_bytes() == kept
