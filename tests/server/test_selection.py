"""Tests for choosing the reported / shipped round on validation numbers (server.selection)."""

from dataclasses import replace

import numpy as np
import pytest

from common.attackers import AttackResult
from common.config import ConfigError, load_config
from common.evaluation import CentralEvaluator, Evaluation, privacy_summary
from common.layout import RunLayout
from common.tasks import TaskScore
from server import selection
from server.federation import FlowerTrainer, run_federation
from server.report import build_report
from server.rounds import RunStopped, evaluate_arrays, finish_run, run_rounds
from server.selection import replaces
from tests.fakes import LoopbackGrid, Site, evaluation_set, small_config, without_timings


def evaluate_again(arrays, config) -> dict:
    evaluator = CentralEvaluator(evaluation_set(), config)
    evaluator.evaluate(None)  # the raw features first, as a run does: changes pair with them
    return without_timings(evaluate_arrays(arrays, config, evaluator))


def evaluation_with(val_by_attacker: dict[str, float], val_ar: float = 80.0) -> Evaluation:
    """An evaluation whose attackers reach these val (and test) cMAPs, and this val AR."""
    results = {
        name: AttackResult(name, test_cmap=val, val_cmap=val, chance_cmap=30.0,
                           per_attribute_ap=[val])
        for name, val in val_by_attacker.items()
    }  # fmt: skip
    return Evaluation(
        privacy_summary(results, results, ("a0",)), {"ar": TaskScore(val_ar, 1.0, val_ar, 50)}
    )


def evaluation(val_cmap: float, val_ar: float, test_cmap: float = 50.0) -> Evaluation:
    """Val cMAP `val_cmap` (test `test_cmap`), val AR `val_ar`."""
    base = evaluation_with({"mlp": val_cmap}, val_ar)
    privacy = replace(base.privacy, cmap=test_cmap)
    return Evaluation(privacy, base.tasks)


BASELINE = evaluation(90.0, 80.0, test_cmap=91.0)


def config_with(*overrides: str):
    return load_config(None, list(overrides))


def test_a_round_replaces_the_selection_only_when_val_privacy_is_lower_and_val_ar_holds():
    config = config_with()  # select val, tasks.evaluated.ar 2
    incumbent = evaluation(85.0, 79.0)
    assert replaces(evaluation(84.0, 78.0), incumbent, BASELINE, config)  # 2.0 below: allowed
    assert not replaces(evaluation(84.0, 77.9), incumbent, BASELINE, config)  # 2.1 below
    assert not replaces(evaluation(85.0, 80.0), incumbent, BASELINE, config)  # not lower
    assert not replaces(evaluation(86.0, 80.0, test_cmap=10.0), incumbent, BASELINE, config)


def test_selection_never_reads_the_test_split():
    config = config_with()
    # Test numbers say the opposite of validation numbers; validation decides.
    good_on_test = evaluation(88.0, 80.0, test_cmap=40.0)
    good_on_val = evaluation(80.0, 80.0, test_cmap=89.0)
    assert replaces(good_on_val, good_on_test, BASELINE, config)
    assert not replaces(good_on_test, good_on_val, BASELINE, config)
    # Test AR is not read either.
    ar_test_zero = Evaluation(good_on_val.privacy, {"ar": TaskScore(0.0, 0.0, 80.0, 50)})
    assert replaces(ar_test_zero, good_on_test, BASELINE, config)


def test_select_last_always_takes_the_newest_round():
    config = config_with("evaluation.select=last")
    assert replaces(evaluation(99.0, 10.0), evaluation(50.0, 80.0), BASELINE, config)


def test_an_unknown_selection_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="evaluation.select.*val, last"):
        load_config(None, ["evaluation.select=best"])


def test_the_old_allowed_drop_key_says_where_it_moved():
    with pytest.raises(ConfigError, match="moved to tasks.evaluated.ar"):
        load_config(None, ["evaluation.max_val_ar_drop=3"])


def test_the_run_ships_and_reports_the_round_chosen_on_val(tmp_path):
    # Any val AR qualifies here: the choice is the lowest val cMAP over rounds 0-4.
    config = small_config(rounds=4, extra=["tasks.evaluated.ar=100"])
    config = replace(config, evaluation=replace(config.evaluation, every=1))
    state = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path, evaluation_set()
    )
    rounds = state.history.rounds
    best = min(rounds, key=lambda r: (r.evaluation.privacy.val_cmap, r.round))
    assert state.history.selected_round == best.round > 0
    # The shipped arrays are that round's: evaluating them again gives its numbers exactly.
    assert evaluate_again(state.selected, config) == without_timings(best.evaluation)

    report_path = finish_run(config, tmp_path, state.history, state.selected, 1.0)
    report = build_report(config, state.history, {}, [])
    assert report["anonymized"]["round"] == best.round == report["selection"]["round"]
    assert report["anonymized"]["privacy_cmap"] == best.evaluation.privacy.cmap
    assert report["last_evaluated"]["round"] == 4
    layout = RunLayout(tmp_path)
    assert "selected on the VALIDATION split" in layout.report_md.read_text()
    assert report_path == layout.report_json and report_path.is_file()
    with np.load(layout.adapter) as shipped:
        for name, array in state.selected.items():
            np.testing.assert_array_equal(shipped[name], array)


@pytest.mark.parametrize("stills", ["selected", "evaluated"])
def test_the_stills_protocol_runs_on_the_last_and_the_selected_round_unless_asked_for_all(
    tmp_path, monkeypatch, stills
):
    # The first trained round is selected and kept (only round 0 gives way), so that the
    # selected round is neither round 0 nor the last.
    monkeypatch.setattr(selection, "replaces", lambda new, old, baseline, config: old == baseline)
    config = small_config(rounds=3, extra=[f"evaluation.stills={stills}"])
    config = replace(config, evaluation=replace(config.evaluation, every=1))
    state = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path, evaluation_set()
    )
    history = state.history
    assert history.selected_round == 1
    evaluated = [r for r in history.rounds if r.evaluation is not None]
    with_stills = {r.round for r in evaluated if r.evaluation.privacy.stills_cmap is not None}
    assert with_stills == ({0, 1, 2, 3} if stills == "evaluated" else {0, 1, 3})
    for record in evaluated:
        assert bool(record.evaluation.privacy.attackers["stills"]) == (record.round in with_stills)
    # The selected round's stills are those of its arrays, as if it had run them inline.
    assert evaluate_again(state.selected, config) == without_timings(history.selected().evaluation)
    report = build_report(config, history, {}, [])
    assert report["anonymized"]["privacy_stills_cmap"] is not None


def test_a_run_stopped_early_gets_the_stills_of_its_last_evaluated_round(tmp_path, monkeypatch):
    """A run that stops before its last round (here its third round is refused) ends on a round
    evaluated without the stills protocol: they are added, as to the selected round."""
    monkeypatch.setattr(selection, "replaces", lambda new, old, baseline, config: old == baseline)
    config = small_config(rounds=3)
    config = replace(config, evaluation=replace(config.evaluation, every=1))
    trainer = FlowerTrainer(LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config)
    train_round = trainer.train_round

    def stop_at_three(server_round, arrays):
        if server_round == 3:
            raise RunStopped("a test stop")
        return train_round(server_round, arrays)

    monkeypatch.setattr(trainer, "train_round", stop_at_three)
    state = run_rounds(config, tmp_path, evaluation_set(), trainer)
    history = state.history
    assert [r.round for r in history.rounds] == [0, 1, 2] and "a test stop" in history.stopped
    assert history.selected_round == 1
    assert all(r.evaluation.privacy.stills_cmap is not None for r in history.rounds)
    assert evaluate_again(state.arrays, config) == without_timings(history.rounds[2].evaluation)
    report = build_report(config, history, {}, [])
    assert report["last_evaluated"]["privacy_stills_cmap"] is not None


def test_a_round_that_costs_too_much_val_ar_is_never_selected(tmp_path):
    # An allowed drop of -1: no trained round can qualify (only round 0, the identity, does).
    config = small_config(rounds=2, extra=["tasks.evaluated.ar=-1"])
    config = replace(config, evaluation=replace(config.evaluation, every=1))
    state = run_federation(
        LoopbackGrid({n: Site(n, config) for n in (1, 2, 3)}), config, tmp_path, evaluation_set()
    )
    assert state.history.selected_round == 0
    assert state.history.selected().evaluation == state.history.baseline
    assert all(r.evaluation is not None for r in state.history.rounds)
    assert evaluate_again(state.selected, config) == without_timings(state.history.baseline)


def test_a_round_zero_that_is_not_the_identity_gives_way_to_any_round_that_keeps_utility():
    # With an output bottleneck round 0 is a fresh, untrained adapter: it need not qualify.
    config = config_with()
    untrained = evaluation(40.0, 30.0)  # very private, useless
    trained = evaluation(70.0, 79.0)
    assert not replaces(untrained, trained, BASELINE, config)
    assert replaces(trained, untrained, BASELINE, config)
    # Neither keeps utility: the one that keeps more of it.
    assert replaces(evaluation(80.0, 60.0), untrained, BASELINE, config)
    assert not replaces(evaluation(20.0, 20.0), untrained, BASELINE, config)


def test_the_identity_round_qualifies_whatever_the_allowed_drop():
    config = config_with("tasks.evaluated.ar=-1")
    assert replaces(BASELINE, evaluation(10.0, 10.0), BASELINE, config)


def test_selection_follows_the_worst_attacker_not_the_papers():
    config = config_with()
    # Round A fools the paper's attacker (mlp 50) but the inversion attacker still reads 85;
    # round B holds every attacker at 70. B is the more private round.
    round_a = evaluation_with({"mlp": 50.0, "inversion": 85.0})
    round_b = evaluation_with({"mlp": 70.0, "inversion": 70.0})
    assert round_a.privacy.val_cmap == 85.0 and round_b.privacy.val_cmap == 70.0
    assert replaces(round_b, round_a, BASELINE, config)
    assert not replaces(round_a, round_b, BASELINE, config)
