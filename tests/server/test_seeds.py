"""Tests for several seeds of several settings side by side (server.seeds, `latentveil seeds`).

The run folders are written by the product's own report and config code (server.report,
common.config) from hand-made histories, so every number is known and the reader follows the
report's real layout."""

import json
import math

import pytest

from common.attackers import AttackResult
from common.config import load_config, save_config
from common.evaluation import Evaluation, privacy_summary
from common.tasks import TaskScore
from server.history import History, RoundRecord
from server.report import build_report
from server.seeds import SeedsError, mean_se, seeds_markdown, summarize_seeds, write_seeds
from simulations.cli import main

RAW = {"cmap": 90.0, "ad": 92.0, "ad_val": 95.0, "fall": 97.0}


def evaluation(
    cmap: float,
    cmap_val: float,
    ar: float,
    ad: float,
    fall: float,
    ad_val: float,
    knn: float | None = None,
):
    """`knn`: a second attacker of the suite, test cMAP `knn` and val `knn` + 2."""

    def results(value: float) -> dict[str, AttackResult]:
        out = {"mlp": AttackResult("mlp", value, cmap_val, 40.0, [value])}
        if knn is not None:
            out["knn"] = AttackResult("knn", knn, knn + 2.0, 40.0, [knn])
        return out

    privacy = privacy_summary(results(cmap), results(cmap + 5), ("gender",))
    tasks = {
        "ar": TaskScore(ar, 0.4, ar + 1.0, 400),
        "ad": TaskScore(ad, 1.5, ad_val, 96, by_kind={"fall": fall, "run": ad - 1.0}),
    }
    return Evaluation(privacy, tasks)


def write_run(
    folder, seed: int, cmap: float, ad: float, fall: float, raw_ar: float = 98.0, knn=None
):
    """A finished run of `seed` whose selected round releases privacy `cmap` (val cmap + 1),
    AR 97.5 (val 98.5) and AD `ad` (val ad + 1), and, with `knn`, a second attacker's."""
    config = load_config(
        None,
        [f"seed={seed}", f"train.seed={seed}", "federation.rounds=2",
         "tasks.seen={ar: 1.0}", "tasks.evaluated={ar: 2.0, ad: 2.0}"],
    )  # fmt: skip
    baseline = evaluation(RAW["cmap"], RAW["cmap"], raw_ar, RAW["ad"], RAW["fall"], RAW["ad_val"])
    chosen = evaluation(cmap, cmap + 1.0, 97.5, ad, fall, ad + 1.0, knn)
    history = History(
        baseline=baseline,
        rounds=[RoundRecord(0, evaluation=baseline), RoundRecord(1, evaluation=chosen)],
        selected_round=1,
    )
    folder.mkdir(parents=True)
    report = build_report(config, history, {}, [], wall_seconds=1.0)
    (folder / "report.json").write_text(json.dumps(report))
    save_config(config, folder / "config.yaml")
    return folder


def two_settings(tmp_path):
    a = [write_run(tmp_path / f"a{s}", s, 40.0 + s, 88.0 + s, 90.0) for s in range(3)]
    b = [write_run(tmp_path / f"b{s}", s, 42.0 + s, 91.0, 96.0 - s) for s in (2, 1, 0, 7)]
    return [("base", a), ("other", b)]


def test_each_setting_is_summarized_over_its_seeds_and_paired_with_the_first(tmp_path):
    result = summarize_seeds(two_settings(tmp_path))
    base, other = result["summaries"]["base"], result["summaries"]["other"]
    assert base["seeds"] == ["0", "1", "2"] and other["seeds"] == ["0", "1", "2", "7"]
    # AD changes from raw 92: base -4, -3, -2 -> mean -3, sd 1, standard error 1/sqrt(3).
    assert base["stats"]["ad"]["mean"] == pytest.approx(-3.0)
    assert base["stats"]["ad"]["se"] == pytest.approx(1 / math.sqrt(3))
    assert base["stats"]["ad_val"]["mean"] == pytest.approx(-3.0 + 1.0 - 3.0)
    assert base["stats"]["privacy_test"]["mean"] == pytest.approx(41.0)
    assert base["stats"]["ad_fall"]["mean"] == pytest.approx(-7.0)
    # Allowed drop 2 (the runs' tasks.evaluated): AD -2 is within, -3 and -4 are not.
    assert base["within"] == {"ar": 3, "ad": 1}
    assert other["within"]["ad"] == 4
    paired = result["paired"]["other"]
    # Seed 7 has no partner; seeds 0-2: other minus base, AD +3, +2, +1; fall +6, +5, +4.
    assert paired["seeds"] == ["0", "1", "2"]
    assert paired["stats"]["ad"]["mean"] == pytest.approx(2.0)
    assert paired["stats"]["ad_fall"]["mean"] == pytest.approx(5.0)
    assert paired["stats"]["privacy_val"]["mean"] == pytest.approx(2.0)
    # Privacy differs by exactly +2 in each pair, so its paired standard error is 0 only when
    # each run meets its own seed's partner.
    assert paired["stats"]["privacy_val"]["se"] == pytest.approx(0.0)


def test_pairs_meet_by_seed_not_by_position(tmp_path):
    a = [write_run(tmp_path / f"a{s}", s, 40.0 + s, 88.0 + s, 90.0) for s in (0, 2)]
    b = [write_run(tmp_path / f"b{s}", s, 50.0 + s, 80.0, 90.0) for s in (1, 2)]
    paired = summarize_seeds([("a", a), ("b", b)])["paired"]["b"]
    assert paired["seeds"] == ["2"]
    assert paired["stats"]["ad"] == {"n": 1, "mean": pytest.approx(80.0 - 90.0), "se": None}


def test_within_overrides_the_allowed_drop(tmp_path):
    result = summarize_seeds(two_settings(tmp_path), within={"ad": 5.0})
    assert result["summaries"]["base"]["within"]["ad"] == 3
    assert result["allowed"] == {"ar": 2.0, "ad": 5.0}
    with pytest.raises(SeedsError, match="tad"):
        summarize_seeds(two_settings(tmp_path / "again"), within={"tad": 5.0})


def test_the_command_writes_a_table_json_and_plot(tmp_path, capsys):
    groups = two_settings(tmp_path)
    args = ["seeds", "--out", str(tmp_path / "out"), "--within", "ad=5"]
    for name, runs in groups:
        args += ["--group", name, *map(str, runs)]
    assert main(args) == 0
    table = (tmp_path / "out" / "seeds.md").read_text()
    assert table in capsys.readouterr().out
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "round 1, 41.00 / 40.00, AR -0.50 (-0.50), AD -4.00 (-6.00)" in rows["| 0"]
    assert rows["| 7"].split(" | ")[1] == "–"  # no base run of seed 7
    assert "| base | 3 | 42.00 ± 0.58 | 41.00 ± 0.58 | -0.50 ± 0.00 | -3.00 ± 0.58 |" in table
    assert "| AR 3/3, AD 3/3 |" in table
    assert "| base | -7.00 ± 0.00 | -3.00 ± 0.58 |" in table  # AD fall and AD run
    assert "| other | 0, 1, 2 |" in table
    saved = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert saved["paired"]["other"]["stats"]["ad"]["mean"] == pytest.approx(2.0)
    assert (tmp_path / "out" / "seeds.png").stat().st_size > 1000


def test_runs_of_different_worlds_are_refused(tmp_path):
    a = [write_run(tmp_path / "a0", 0, 40.0, 88.0, 90.0)]
    b = [write_run(tmp_path / "b0", 0, 40.0, 88.0, 90.0, raw_ar=97.0)]
    with pytest.raises(SeedsError, match="different raw-feature baselines.*AR top-1 97.00"):
        summarize_seeds([("a", a), ("b", b)])


def test_runs_that_allow_different_drops_need_within(tmp_path):
    a = [write_run(tmp_path / "a0", 0, 40.0, 88.0, 90.0)]
    b = [write_run(tmp_path / "b0", 0, 40.0, 88.0, 90.0)]
    report = json.loads((b[0] / "report.json").read_text())
    report["selection"]["max_val_drop"]["ad"] = 5.0
    (b[0] / "report.json").write_text(json.dumps(report))
    with pytest.raises(SeedsError, match="different drops.*--within ad=POINTS"):
        summarize_seeds([("a", a), ("b", b)])
    assert summarize_seeds([("a", a), ("b", b)], within={"ad": 5.0})["allowed"]["ad"] == 5.0


def test_two_runs_of_one_seed_in_a_setting_are_refused(tmp_path):
    runs = [write_run(tmp_path / n, 3, 40.0, 88.0, 90.0) for n in ("x", "y")]
    with pytest.raises(SeedsError, match="two runs of seed 3"):
        summarize_seeds([("a", runs)])


def test_bad_groups_and_folders_are_one_line_errors_that_write_nothing(tmp_path, capsys):
    run = write_run(tmp_path / "run", 0, 40.0, 88.0, 90.0)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    cases = [
        (["--group", "lonely"], "needs at least one run folder"),
        (["--group", "a", str(run), "--group", "a", str(run)], "same name"),
        (["--group", "a", str(tmp_path / "empty")], "no report.json"),
        (["--group", "a", str(tmp_path / "missing")], "does not exist"),
        (["--group", "a", str(run), "--within", "ad=lots"], "TASK=POINTS"),
        (["--group", "a", str(run), "--within", "ad=nan"], "TASK=POINTS"),
    ]
    for extra, message in cases:
        assert main(["seeds", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    (run / "config.yaml").unlink()
    assert main(["seeds", "--out", str(out), "--group", "a", str(run)]) == 2
    assert "seed is unknown" in capsys.readouterr().err
    assert not out.exists()


def test_a_report_of_another_shape_names_the_missing_key(tmp_path):
    run = write_run(tmp_path / "run", 0, 40.0, 88.0, 90.0)
    original = (run / "report.json").read_text()
    report = json.loads(original)
    del report["selection"]["raw"]
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(SeedsError, match="lacks 'raw'"):
        summarize_seeds([("a", [run])])
    report = json.loads(original)
    report["tasks"] = ["ar", "ad"]
    (run / "report.json").write_text(json.dumps(report))
    with pytest.raises(SeedsError, match="wrong type"):
        summarize_seeds([("a", [run])])
    (run / "report.json").write_text("<html>")
    with pytest.raises(SeedsError, match="cannot be read"):
        write_seeds([("a", [run])], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mean_and_standard_error():
    assert mean_se([1.0, 2.0, 3.0]) == {"n": 3, "mean": 2.0, "se": pytest.approx(1 / math.sqrt(3))}
    assert mean_se([4.0]) == {"n": 1, "mean": 4.0, "se": None}


def test_each_attacker_is_summarized_and_paired_on_its_own(tmp_path):
    # knn reads less than mlp in every run, so the worst case is mlp's and hides knn's change.
    a = [write_run(tmp_path / f"a{s}", s, 40.0 + s, 90.0, 90.0, knn=30.0 + 2 * s) for s in range(3)]
    b = [write_run(tmp_path / f"b{s}", s, 40.0 + s, 90.0, 90.0, knn=33.0 + s) for s in range(3)]
    result = summarize_seeds([("a", a), ("b", b)])
    assert result["attackers"] == ["mlp", "knn"]
    stats = result["summaries"]["a"]["stats"]
    assert stats["privacy_test@knn"]["mean"] == pytest.approx(32.0)  # 30, 32, 34
    assert stats["privacy_val@knn"]["mean"] == pytest.approx(34.0)
    assert stats["privacy_test@knn"]["se"] == pytest.approx(2 / math.sqrt(3))
    paired = result["paired"]["b"]["stats"]
    assert paired["privacy_test"]["mean"] == pytest.approx(0.0)  # the worst case: no change
    assert paired["privacy_test@knn"]["mean"] == pytest.approx(2.0)  # +3, +2, +1
    table = seeds_markdown(result)
    assert "| a | 42.00 ± 0.58 / 41.00 ± 0.58 | 34.00 ± 1.15 / 32.00 ± 1.15 |" in table
    assert "| b | +0.00 ± 0.00 / +0.00 ± 0.00 | +2.00 ± 0.58 / +2.00 ± 0.58 |" in table
    # Reports without the suite's entries (older runs): in the reference group, its cells and
    # the pairs are blank and the other group's numbers stay; in every group, no tables.
    for run in a:
        report = json.loads((run / "report.json").read_text())
        del report["privacy_attackers"]
        (run / "report.json").write_text(json.dumps(report))
    table = seeds_markdown(summarize_seeds([("a", a), ("b", b)]))
    assert "| a | – / – | – / – |" in table and "| b | – / – | – / – |" in table
    assert "| b | 42.00 ± 0.58 / 41.00 ± 0.58 | 36.00 ± 0.58 / 34.00 ± 0.58 |" in table
    for run in b:
        report = json.loads((run / "report.json").read_text())
        del report["privacy_attackers"]
        (run / "report.json").write_text(json.dumps(report))
    assert "per attacker" not in seeds_markdown(summarize_seeds([("a", a), ("b", b)])).lower()
