"""Action recognition (AR): one action per video.

Head: a linear classifier on the mean of a sequence's anonymized clip features, trained with
cross-entropy. Central protocol: a fresh linear probe on anonymized clip features (each clip
labelled with its video's action; a video's score averages its clips' logits), selected on val,
top-1 on test with its standard error (common.probes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.attackers import Split
from common.heads import SequenceClassifier
from common.metrics import paired_accuracy_standard_error
from common.probes import run_linear_probe
from common.tasks.base import TASKS, Task, TaskScore, TaskSplit

if TYPE_CHECKING:
    from common.config import EvaluationConfig, RunConfig


class ActionRecognition(Task):
    name = "ar"
    dataset = "ar"
    metric = "top1"
    title = "AR top-1"

    def labels(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {"action": int(entry["labels"]["action"])}

    def build_head(self, dim: int, config: RunConfig) -> nn.Module:
        return SequenceClassifier(dim, config.heads.num_actions)

    def loss(
        self,
        head: nn.Module,
        anonymized: torch.Tensor,
        labels: dict[str, torch.Tensor],
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return F.cross_entropy(head(anonymized, key_padding_mask), labels["action"])

    def budget_groups(self, labels: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return labels["action"]

    def action_clips(
        self, clips: np.ndarray, labels: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every clip, under its video's action."""
        actions = np.asarray(labels["action"]).astype(np.int64)
        return clips.reshape(-1, clips.shape[-1]), np.repeat(actions, clips.shape[1])

    def site_metric(
        self, head: nn.Module, anonymized: torch.Tensor, labels: dict[str, torch.Tensor]
    ) -> float:
        """Top-1 of the head, which averages over all of a video's clips."""
        with torch.no_grad():
            logits = head(anonymized)  # (N, num_actions)
        return 100.0 * float((logits.argmax(dim=1) == labels["action"]).float().mean())

    def evaluate(
        self, splits: dict[str, TaskSplit], classes: tuple[str, ...], config: EvaluationConfig
    ) -> TaskScore:
        probe = run_linear_probe(
            *(Split(splits[s].clips, splits[s].labels["action"]) for s in ("train", "val", "test")),
            len(classes),
            epochs=config.probe_epochs,
            lr=config.probe_lr,
            batch_size=config.batch_size,
        )
        return TaskScore(probe.test_top1, probe.test_top1_se, probe.val_top1, probe.num_test,
                         test_outputs=probe.test_predictions)  # fmt: skip

    def change_standard_error(
        self, score: TaskScore, baseline: TaskScore, test_labels: dict[str, np.ndarray]
    ) -> float | None:
        actions = test_labels["action"]
        return paired_accuracy_standard_error(
            score.test_outputs == actions, baseline.test_outputs == actions
        )


TASKS.register("ar")(ActionRecognition())
