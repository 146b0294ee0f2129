"""Which evaluated round a run reports and ships, chosen on validation numbers only.

Anonymization training does not converge to a fixed point: the privacy budget loss keeps
rising while the attacker's cMAP can go back up (the training NT-Xent is a poor stand-in for
privacy, EXPERIMENTS.md). Like early stopping, the run keeps the evaluated round that is best
on the central VALIDATION split: the lowest validation privacy cMAP among rounds whose
every evaluated task's validation metric is within its allowed drop (`tasks.evaluated`, in
points) of the raw features'. Round 0 (the identity adapter) always qualifies, so a run that
never beats raw features ships the identity. (With an output bottleneck, round 0 is not the
identity and may not qualify: a qualifying round then always replaces it, and among rounds
that do not qualify the one with the smaller shortfall is kept.) The validation privacy cMAP
is the WORST case over the attacker suite on video features (common.evaluation): choosing by
one attacker's score would reward features that defeat that attacker rather than features
that hold nothing. The test split is never looked at. `evaluation.select: last` keeps the
last round.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common.config import RunConfig
from common.evaluation import Evaluation
from server.history import History, RoundRecord


def initial_history(baseline: Evaluation, identity: bool) -> History:
    """A run's history before its first round: the raw-feature `baseline` and round 0. When the
    adapter starts as the `identity`, round 0's evaluation is the baseline and round 0 is the
    selection; otherwise (an untrained bottleneck) round 0 is not evaluated and nothing is
    selected until the first evaluated round."""
    return History(
        baseline=baseline,
        rounds=[RoundRecord(0, evaluation=baseline if identity else None)],
        selected_round=0 if identity else None,
    )


def shortfall(evaluation: Evaluation, baseline: Evaluation, allowed: Mapping[str, float]) -> float:
    """How far the worst evaluated task's validation drop below the raw features' exceeds its
    allowed drop (`tasks.evaluated`), in points; <= 0 when every task is within its allowance."""
    return max(
        baseline.tasks[task].val - evaluation.tasks[task].val - drop
        for task, drop in allowed.items()
    )


def qualifies(evaluation: Evaluation, baseline: Evaluation, allowed: Mapping[str, float]) -> bool:
    """Every evaluated task's validation metric within its allowed drop of the raw-feature
    baseline (the identity adapter's evaluation, which is the baseline itself, always
    qualifies)."""
    return evaluation == baseline or shortfall(evaluation, baseline, allowed) <= 0


def replaces(
    candidate: Evaluation, incumbent: Evaluation, baseline: Evaluation, config: RunConfig
) -> bool:
    """Whether a newly evaluated round takes the place of the round selected so far."""
    if config.evaluation.select == "last":
        return True
    allowed = config.tasks.evaluated
    candidate_ok = qualifies(candidate, baseline, allowed)
    incumbent_ok = qualifies(incumbent, baseline, allowed)
    if candidate_ok != incumbent_ok:
        return candidate_ok
    if not candidate_ok:  # neither keeps utility: keep the one that falls less short
        return shortfall(candidate, baseline, allowed) < shortfall(incumbent, baseline, allowed)
    return candidate.privacy.val_cmap < incumbent.privacy.val_cmap


def update_selection(
    history: History,
    record: RoundRecord,
    arrays: dict[str, np.ndarray],
    selected: dict[str, np.ndarray],
    config: RunConfig,
) -> dict[str, np.ndarray]:
    """After round `record` (arrays `arrays`): the arrays the run now ships. When the round was
    evaluated and replaces the selection (or nothing is selected yet: round 0 of an adapter
    with a bottleneck is not evaluated), `history.selected_round` becomes its number."""
    if record.evaluation is None:
        return selected
    if history.selected_round is None or replaces(
        record.evaluation, history.selected().evaluation, history.baseline, config
    ):
        history.selected_round = record.round
        return arrays
    return selected
