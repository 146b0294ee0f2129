"""Tests for choosing the reported / shipped round on validation numbers (server.selection)."""

from dataclasses import replace

import numpy as np
import pytest

from common.config import ConfigError, load_config
from common.evaluation import CentralEvaluator
from server.app import ADAPTER_FILE, finish_run
from server.federation import evaluate_arrays, run_federation
from server.report import build_report
from server.selection import replaces, selected_record
from tests.server.conftest import LoopbackGrid
from tests.server.test_federation import Site, evaluation_set, small_config, without_timings


def evaluate_again(arrays, config) -> dict:
    evaluator = CentralEvaluator(evaluation_set(), config.evaluation, config.anonymizer.window)
    return without_timings(evaluate_arrays(arrays, config, evaluator))


BASELINE = {"privacy_val_cmap": 90.0, "ar_val_top1": 80.0, "privacy_cmap": 91.0}


def evaluation(val_cmap: float, val_ar: float, test_cmap: float = 50.0) -> dict:
    return {"privacy_val_cmap": val_cmap, "ar_val_top1": val_ar, "privacy_cmap": test_cmap}


def test_a_round_replaces_the_selection_only_when_val_privacy_is_lower_and_val_ar_holds():
    config = load_config().evaluation  # select val, max_val_ar_drop 2
    incumbent = evaluation(85.0, 79.0)
    assert replaces(evaluation(84.0, 78.0), incumbent, BASELINE, config)  # 2.0 below: allowed
    assert not replaces(evaluation(84.0, 77.9), incumbent, BASELINE, config)  # 2.1 below
    assert not replaces(evaluation(85.0, 80.0), incumbent, BASELINE, config)  # not lower
    assert not replaces(evaluation(86.0, 80.0, test_cmap=10.0), incumbent, BASELINE, config)


def test_selection_never_reads_the_test_split():
    config = load_config().evaluation
    # Test numbers say the opposite of validation numbers; validation decides.
    good_on_test = evaluation(88.0, 80.0, test_cmap=40.0)
    good_on_val = evaluation(80.0, 80.0, test_cmap=89.0)
    assert replaces(good_on_val, good_on_test, BASELINE, config)
    assert not replaces(good_on_test, good_on_val, BASELINE, config)
    no_test = {k: v for k, v in good_on_val.items() if k != "privacy_cmap"}
    assert replaces(no_test, good_on_test, BASELINE, config)


def test_select_last_always_takes_the_newest_round():
    config = load_config(None, ["evaluation.select=last"]).evaluation
    assert replaces(evaluation(99.0, 10.0), evaluation(50.0, 80.0), BASELINE, config)


def test_an_unknown_selection_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="evaluation.select.*val, last"):
        load_config(None, ["evaluation.select=best"])


def test_the_run_ships_and_reports_the_round_chosen_on_val(tmp_path):
    # Any val AR qualifies here: the choice is the lowest val cMAP over rounds 0-4.
    config = small_config(rounds=4, extra=["evaluation.max_val_ar_drop=100"])
    config = replace(config, evaluation=replace(config.evaluation, every=1))
    state = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path, evaluation_set()
    )
    rounds = state.history["rounds"]
    best = min(rounds, key=lambda r: (r["evaluation"]["privacy_val_cmap"], r["round"]))
    assert state.history["selected_round"] == best["round"]
    # The shipped arrays are that round's: evaluating them again gives its numbers exactly.
    assert evaluate_again(state.selected, config) == without_timings(best["evaluation"])

    report_path = finish_run(config, tmp_path, state.history, state.selected, 1.0)
    report = build_report(config, state.history, {}, [])
    assert report["anonymized"]["round"] == best["round"] == report["selection"]["round"]
    assert report["anonymized"]["privacy_cmap"] == best["evaluation"]["privacy_cmap"]
    assert report["last_evaluated"]["round"] == 4
    assert "selected on the VALIDATION split" in (tmp_path / "report.md").read_text()
    assert report_path.is_file()
    with np.load(tmp_path / ADAPTER_FILE) as shipped:
        for name, array in state.selected.items():
            np.testing.assert_array_equal(shipped[name], array)


def test_a_round_that_costs_too_much_val_ar_is_never_selected(tmp_path):
    # max_val_ar_drop -1: no trained round can qualify (only round 0, the identity, does).
    config = small_config(rounds=2, extra=["evaluation.max_val_ar_drop=-1"])
    config = replace(config, evaluation=replace(config.evaluation, every=1))
    state = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path, evaluation_set()
    )
    assert state.history["selected_round"] == 0
    assert selected_record(state.history)["evaluation"] == state.history["baseline"]
    assert all("evaluation" in r for r in state.history["rounds"])
    assert evaluate_again(state.selected, config) == without_timings(state.history["baseline"])


def test_a_round_zero_that_is_not_the_identity_gives_way_to_any_round_that_keeps_utility():
    # With an output bottleneck round 0 is a fresh, untrained adapter: it need not qualify.
    config = load_config().evaluation
    untrained = evaluation(40.0, 30.0)  # very private, useless
    trained = evaluation(70.0, 79.0)
    assert not replaces(untrained, trained, BASELINE, config)
    assert replaces(trained, untrained, BASELINE, config)
    # Neither keeps utility: the one that keeps more of it.
    assert replaces(evaluation(80.0, 60.0), untrained, BASELINE, config)
    assert not replaces(evaluation(20.0, 20.0), untrained, BASELINE, config)


def test_the_identity_round_qualifies_whatever_the_allowed_drop():
    config = load_config(None, ["evaluation.max_val_ar_drop=-1"]).evaluation
    assert replaces(dict(BASELINE), evaluation(10.0, 10.0), BASELINE, config)


def test_selection_follows_the_worst_attacker_not_the_papers():
    from common.attackers import AttackResult
    from common.evaluation import privacy_summary

    def evaluation_with(val_by_attacker: dict[str, float]) -> dict:
        results = {
            name: AttackResult(name, test_cmap=val, val_cmap=val, chance_cmap=30.0,
                               per_attribute_ap=[val])
            for name, val in val_by_attacker.items()
        }  # fmt: skip
        return privacy_summary(results, results, ("a0",)) | {"ar_val_top1": 80.0}

    config = load_config().evaluation
    # Round A fools the paper's attacker (mlp 50) but the inversion attacker still reads 85;
    # round B holds every attacker at 70. B is the more private round.
    round_a = evaluation_with({"mlp": 50.0, "inversion": 85.0})
    round_b = evaluation_with({"mlp": 70.0, "inversion": 70.0})
    assert round_a["privacy_val_cmap"] == 85.0 and round_b["privacy_val_cmap"] == 70.0
    assert replaces(round_b, round_a, BASELINE, config)
    assert not replaces(round_a, round_b, BASELINE, config)
