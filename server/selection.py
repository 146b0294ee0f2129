"""Which evaluated round a run reports and ships, chosen on validation numbers only.

Anonymization training does not converge to a fixed point: the privacy budget loss keeps
rising while the attacker's cMAP can go back up (the training NT-Xent is a poor stand-in for
privacy, EXPERIMENTS.md). Like early stopping, the run keeps the evaluated round that is best
on the central VALIDATION split: the lowest validation privacy cMAP among rounds whose
validation AR top-1 is at most `evaluation.max_val_ar_drop` points below the raw features'.
Round 0 (the identity adapter) always qualifies, so a run that never beats raw features ships
the identity. (With an output bottleneck, round 0 is not the identity and may not qualify: a
qualifying round then always replaces it, and among rounds that do not qualify the one with
the higher validation AR is kept.) The validation privacy cMAP is the WORST case over the
attacker suite on video features (common.evaluation): choosing by one attacker's score would
reward features that defeat that attacker rather than features that hold nothing. The test
split is never looked at. `evaluation.select: last` keeps the last round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.config import EvaluationConfig


def initial_history(baseline: dict[str, Any], identity: bool) -> dict[str, Any]:
    """A run's history before its first round: the raw-feature `baseline` and round 0. When the
    adapter starts as the `identity`, round 0's evaluation is the baseline and round 0 is the
    selection; otherwise (an untrained bottleneck) round 0 is not evaluated and nothing is
    selected until the first evaluated round."""
    record: dict[str, Any] = {"round": 0}
    if identity:
        record["evaluation"] = baseline
    return {
        "rounds": [record],
        "baseline": baseline,
        "rejected": [],
        "selected_round": 0 if identity else None,
    }


def qualifies(
    evaluation: dict[str, Any], baseline: dict[str, Any], config: EvaluationConfig
) -> bool:
    """Validation AR top-1 at most `max_val_ar_drop` points below the raw-feature baseline (the
    identity adapter's evaluation, which is the baseline itself, always qualifies)."""
    if evaluation == baseline:
        return True
    return baseline["ar_val_top1"] - evaluation["ar_val_top1"] <= config.max_val_ar_drop


def replaces(
    candidate: dict[str, Any],
    incumbent: dict[str, Any],
    baseline: dict[str, Any],
    config: EvaluationConfig,
) -> bool:
    """Whether a newly evaluated round takes the place of the round selected so far."""
    if config.select == "last":
        return True
    candidate_ok = qualifies(candidate, baseline, config)
    incumbent_ok = qualifies(incumbent, baseline, config)
    if candidate_ok != incumbent_ok:
        return candidate_ok
    if not candidate_ok:  # neither keeps utility: keep the one that keeps more
        return candidate["ar_val_top1"] > incumbent["ar_val_top1"]
    return candidate["privacy_val_cmap"] < incumbent["privacy_val_cmap"]


def selected_record(history: dict[str, Any]) -> dict[str, Any]:
    """The selected round's record in a run history (the last evaluated one when a history
    predates selection)."""
    evaluated = [r for r in history["rounds"] if "evaluation" in r]
    if not evaluated:
        raise ValueError("no round of this run has been evaluated yet")
    chosen = history.get("selected_round")
    for record in evaluated:
        if record["round"] == chosen:
            return record
    return evaluated[-1]


def update_selection(
    history: dict[str, Any],
    record: dict[str, Any],
    arrays: dict[str, np.ndarray],
    selected: dict[str, np.ndarray],
    config: EvaluationConfig,
) -> dict[str, np.ndarray]:
    """After round `record` (arrays `arrays`): the arrays the run now ships. When the round was
    evaluated and replaces the selection (or nothing is selected yet: round 0 of an adapter
    with a bottleneck is not evaluated), `history["selected_round"]` becomes its number."""
    if "evaluation" not in record:
        return selected
    if history.get("selected_round") is None or replaces(
        record["evaluation"],
        selected_record(history)["evaluation"],
        history["baseline"],
        config,
    ):
        history["selected_round"] = record["round"]
        return arrays
    return selected
