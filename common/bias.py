"""The paper's bias protocol: does a downstream action model work as well for every group?

The central world's bias set (NTU-Bias style) trains on a skewed split (95% of each action's
videos show one gender presentation, flipped for one action) and tests on a balanced one. A
fresh linear action probe (common.probes) on the (anonymized) clip features of the train split,
selected on val, is scored on test per group; the gap between the best and the worst group is
what the protocol reports (lower is fairer). Raw features give the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from common.attackers import Split
from common.probes import run_linear_probe

if TYPE_CHECKING:
    from common.config import EvaluationConfig
    from common.tasks import TaskSplit


@dataclass(frozen=True)
class BiasResult:
    """Action top-1 per group on the balanced test split (percent), and the gap."""

    accuracy: dict[str, float]  # group -> top-1
    gap: float | None  # best group - worst group, points (None: fewer than two groups tested)
    top1: float  # over all test videos
    num_test: dict[str, int]  # group -> test videos

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "gap": self.gap,
            "top1": self.top1,
            "num_test": self.num_test,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BiasResult:
        return cls(dict(data["accuracy"]), data["gap"], data["top1"], dict(data["num_test"]))


def measure_bias(
    splits: dict[str, TaskSplit],
    num_classes: int,
    groups: tuple[str, ...],
    config: EvaluationConfig,
) -> BiasResult:
    """`splits[s].labels` hold "action" and "group" (an index into `groups`) per video."""
    probe = run_linear_probe(
        *(Split(splits[s].clips, splits[s].labels["action"]) for s in ("train", "val", "test")),
        num_classes,
        epochs=config.probe_epochs,
        lr=config.probe_lr,
        batch_size=config.batch_size,
    )
    test = splits["test"].labels
    correct = probe.test_predictions == test["action"]
    accuracy, counts = {}, {}
    for index, name in enumerate(groups):
        members = test["group"] == index
        if members.any():
            accuracy[name] = 100.0 * float(np.mean(correct[members]))
            counts[name] = int(members.sum())
    return BiasResult(
        accuracy=accuracy,
        gap=max(accuracy.values()) - min(accuracy.values()) if len(accuracy) > 1 else None,
        top1=probe.test_top1,
        num_test=counts,
    )
