"""`latentveil ablate` on the tiny config: every variant runs on the shared features and the
table names each variant's trained tasks and every evaluated task's number."""

import json

import pytest

from common.config import ConfigError, LossConfig, load_config
from common.layout import RunLayout
from simulations.ablate import (
    VARIANTS,
    AblationError,
    ablation_markdown,
    ablation_row,
    chosen_variants,
    run_ablation,
)
from simulations.cli import main
from tests.paths import CONFIG_DIR

pytestmark = pytest.mark.integration


def test_every_variant_runs_on_the_shared_features_and_lands_in_one_table(tmp_path):
    # Centralized runs keep this test short; the command runs whatever federation.mode says.
    args = ["ablate", "--out", str(tmp_path), "--quiet", "--config", str(CONFIG_DIR / "tiny.yaml")]
    args += ["--set", "federation.mode=centralized", "--set", "federation.rounds=1"]
    # (The tiny world's central AD split has one val video: too few for AD's protocol.)
    args += ["--set", "tasks.evaluated={ar: 2, tad: 2}"]
    args += ["--set", "evaluation.attackers=logistic"]
    # (not the paper's w_b, so that paper_weights has to set it back)
    args += ["--set", "loss.w_b=2"]
    # the embedded default's start: the sites' discriminant, so the random twins run too
    start = ["anonymizer.init=discriminant", "anonymizer.bottleneck=2"]
    for override in start:
        args += ["--set", override]
    assert main(args) == 0
    base = load_config(CONFIG_DIR / "tiny.yaml", ["loss.w_b=2", *start])
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert [row["variant"] for row in rows] == [v.name for v in VARIANTS]
    seen = {row["variant"]: row["seen"] for row in rows}
    assert seen["all_seen"] == seen["all_seen_random"] == ["ar", "tad"]
    one_task = ("ar_only", "ar_only_random", "ar_only_videos", "no_lc", "no_budget",
                "paper_weights")  # fmt: skip
    assert all(seen[v] == ["ar"] for v in one_task)
    for row in rows:
        assert set(row["anonymized"]) == {"privacy_cmap", "ar_top1", "tad_map"}
        assert all(value is not None for value in row["anonymized"].values())
        report = json.loads(RunLayout(tmp_path / row["variant"]).report_json.read_text())
        config = report["config"]
        # Only all_seen and ar_only start where the config does; the losses' variants start
        # where SPLAVU does, so that what they ship is what their losses trained.
        from_config = row["variant"] in ("all_seen", "ar_only")
        assert config["anonymizer"]["init"] == ("discriminant" if from_config else "random")
        assert bool(report["initialisation"]) == from_config  # the fit's account, or {}
        # Each variant changed only what it names.
        assert config["loss"]["w_lc"] == {"no_lc": 0.0, "paper_weights": 100.0}.get(
            row["variant"], base.loss.w_lc
        )
        assert config["loss"]["w_b"] == {"no_budget": 0.0, "paper_weights": LossConfig().w_b}.get(
            row["variant"], base.loss.w_b
        )
        # Only ar_only_videos keeps the other task's videos, at weight 0, out of the budget.
        if row["variant"] == "ar_only_videos":
            assert config["tasks"]["seen"] == {"ar": 1.0, "tad": 0.0}
            assert config["loss"]["budget_tasks"] == ["ar"]
        elif row["variant"] not in ("all_seen", "all_seen_random"):
            assert config["tasks"]["seen"] == {"ar": 1.0}
            assert config["loss"]["budget_tasks"] == base.loss.budget_tasks
        # The features were extracted once, in the shared folder.
        assert RunLayout(tmp_path / row["variant"]).features.is_symlink()
    table = (tmp_path / "ablation.md").read_text()
    assert "| raw features |" in table and "TAD mAP" in table
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_a_config_that_starts_at_random_leaves_out_the_random_twins_unless_named():
    def names(config, asked=None):
        return [v.name for v in chosen_variants(config, asked)]

    every = [v.name for v in VARIANTS]
    assert names(load_config(CONFIG_DIR / "tiny.yaml")) == [
        n for n in every if n not in ("all_seen_random", "ar_only_random")
    ]
    started = load_config(
        CONFIG_DIR / "tiny.yaml", ["anonymizer.init=discriminant", "anonymizer.bottleneck=2"]
    )
    assert names(started) == every
    asked = ["no_lc", "ar_only_random"]
    assert names(load_config(CONFIG_DIR / "tiny.yaml"), asked) == ["ar_only_random", "no_lc"]


def test_a_variant_the_config_cannot_run_is_refused_before_anything_runs(tmp_path):
    # a discriminant start needs AR trained, so a one-task variant on TAD cannot run
    config = load_config(CONFIG_DIR / "tiny.yaml", [
        "anonymizer.init=discriminant", "anonymizer.bottleneck=2",
        "tasks.seen={ar: 1, tad: 1}", "tasks.evaluated={ar: 2, tad: 2}",
    ])  # fmt: skip
    with pytest.raises(ConfigError, match="ar at a positive weight"):
        run_ablation(config, tmp_path / "out", seen="tad")
    assert not (tmp_path / "out").exists()


def test_an_unknown_variant_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(AblationError, match="unknown variant.*no_such"):
        run_ablation(load_config(None), tmp_path, variants=["no_such"])
    assert not any(tmp_path.iterdir())


def test_a_metric_with_kinds_gets_a_table_of_its_kinds_per_variant():
    def report(anonymized: dict[str, float], kinds: dict[str, float] | None) -> dict:
        tasks = {"ad": {"metric": "ad_auc", "title": "AD AUC"}}
        raw = {"privacy_cmap": 90.0, "ad_auc": 92.0, "ad_auc_se": 1.0,
               "ad_auc_by_kind": {"fall": 97.0, "run": 91.0}}  # fmt: skip
        anon = {"privacy_cmap": 45.0, "ad_auc": 88.0, "ad_auc_se": 1.5, "round": 10}
        anon |= {"ad_auc_by_kind": kinds} if kinds else {}
        return {"baseline": raw, "anonymized": anon | anonymized, "tasks": tasks,
                "config": {"tasks": {"seen": {"ar": 1.0}}}}  # fmt: skip

    rows = [
        ablation_row(VARIANTS[0], report({}, {"fall": 96.5, "run": 90.0})),
        ablation_row(VARIANTS[1], report({}, {"fall": 83.25})),
        ablation_row(VARIANTS[2], report({}, None)),  # a report without kinds
    ]
    table = ablation_markdown(rows)
    assert "AD AUC per kind" in table
    assert "| raw features | 97.00 | 91.00 |" in table
    assert f"| {VARIANTS[0].name} | 96.50 | 90.00 |" in table
    assert f"| {VARIANTS[1].name} | 83.25 | – |" in table
    assert f"| {VARIANTS[2].name} | – | – |" in table
    no_kinds = [ablation_row(VARIANTS[0], report({}, None) | {"baseline": {"ad_auc": 92.0}})]
    assert "per kind" not in ablation_markdown(no_kinds)
    # a raw evaluation made before kinds were recorded: the variants' kinds still show
    old_raw = report({}, {"fall": 80.0}) | {"baseline": {"privacy_cmap": 90.0, "ad_auc": 92.0}}
    table = ablation_markdown([ablation_row(VARIANTS[0], old_raw)])
    assert "| raw features | – |" in table and f"| {VARIANTS[0].name} | 80.00 |" in table
