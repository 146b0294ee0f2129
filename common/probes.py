"""Linear probes: a fresh classifier trained on features, selected on val, scored on test.

The central protocol of classification tasks (common.tasks.action_recognition): it measures
what a downstream model can still learn from (anonymized) features, not what the co-trained
head learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.attackers import Split
from common.fitting import fit_selected_on_val
from common.metrics import accuracy_standard_error, top1_accuracy


@dataclass(frozen=True)
class ProbeResult:
    """Top-1 accuracy of the linear probe (percentages)."""

    test_top1: float
    test_top1_se: float
    val_top1: float
    best_epoch: int
    num_test: int
    test_predictions: np.ndarray  # (N,) the predicted class of each test video


def standardize(features: dict[str, np.ndarray], train: str = "train") -> dict[str, torch.Tensor]:
    """Each split's features (N, ..., d) as float32 tensors standardized per dimension with the
    `train` split's mean and standard deviation (what every central protocol's fresh model
    reads)."""
    reference = features[train]
    flat = torch.as_tensor(reference, dtype=torch.float32).reshape(-1, reference.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp_min(1e-6)
    return {
        name: (torch.as_tensor(values, dtype=torch.float32) - mean) / std
        for name, values in features.items()
    }


def run_linear_probe(
    train: Split,
    val: Split,
    test: Split,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> ProbeResult:
    """Train a linear classifier; features are (N, n_clips, d), labels (N,).

    Training uses every clip as an example; validation and test average each video's clip
    logits before the argmax.
    """
    x = standardize({"train": train.features, "val": val.features, "test": test.features})
    x_train, x_val, x_test = x["train"], x["val"], x["test"]  # (N, n_clips, d)
    n_clips, d = x_train.shape[1], x_train.shape[2]
    y_train = torch.as_tensor(train.labels, dtype=torch.long).repeat_interleave(n_clips)
    x_train = x_train.reshape(-1, d)  # (N * n_clips, d)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = nn.Linear(d, num_classes)

    def video_logits(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return probe(x).mean(dim=1).numpy()  # (N, n_clips, C) -> (N, C)

    fit = fit_selected_on_val(
        probe,
        F.cross_entropy,
        x_train,
        y_train,
        lambda: top1_accuracy(video_logits(x_val), val.labels),
        epochs, lr, batch_size, seed,
    )  # fmt: skip
    test_logits = video_logits(x_test)
    test_top1 = top1_accuracy(test_logits, test.labels)
    return ProbeResult(
        test_top1=test_top1,
        test_top1_se=accuracy_standard_error(test_top1, len(test.labels)),
        val_top1=fit.best_score,
        best_epoch=fit.best_epoch,
        num_test=len(test.labels),
        test_predictions=test_logits.argmax(axis=1),
    )
