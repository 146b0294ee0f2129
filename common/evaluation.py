"""Evaluation protocols on (anonymized) features: the privacy attacker and the linear AR probe.

Both train a fresh model from scratch on the train split, select it on the validation split and
report the test split only for the selected model (the paper reports the best test value over
training; we never look at test to choose). Inputs are standardised with train-split statistics,
the same procedure for raw and anonymized features.

- privacy: the paper's attacker Linear(d, d) -> ReLU -> Linear(d, A) on static-clip features,
  BCE, AdamW, plateau scheduler; cMAP on test.
- action recognition: a linear classifier on clip features (each clip labelled with its video's
  action); a video's score averages the logits of its evenly spaced evaluation clips; top-1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.config import HeadsConfig
from common.heads import PrivacyAttacker
from common.metrics import (
    accuracy_standard_error,
    chance_cmap,
    class_mean_average_precision,
    per_attribute_average_precision,
    top1_accuracy,
)


@dataclass(frozen=True)
class Split:
    """Features and labels of one split. For AR, `features` is (N, n_clips, d)."""

    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class AttackerResult:
    """Privacy leakage measured by the attacker protocol (percentages)."""

    test_cmap: float
    val_cmap: float
    chance_cmap: float
    best_epoch: int
    per_attribute_ap: list[float | None]


@dataclass(frozen=True)
class ProbeResult:
    """Action recognition measured by the linear probe (percentages)."""

    test_top1: float
    test_top1_se: float
    val_top1: float
    best_epoch: int
    num_test: int


def _standardizer(train: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.as_tensor(train, dtype=torch.float32).reshape(-1, train.shape[-1])  # (M, d)
    return flat.mean(0), flat.std(0).clamp_min(1e-6)


def _to_tensor(features: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (torch.as_tensor(features, dtype=torch.float32) - mean) / std


def run_attacker(
    train: Split,
    val: Split,
    test: Split,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> AttackerResult:
    """Train the attacker on static-clip features (N, d) with 0/1 attribute labels (N, A)."""
    mean, std = _standardizer(train.features)
    x_train, x_val, x_test = (_to_tensor(s.features, mean, std) for s in (train, val, test))
    y_train = torch.as_tensor(train.labels, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        attacker = PrivacyAttacker(x_train.shape[1], HeadsConfig(num_attributes=y_train.shape[1]))
    optimizer = torch.optim.AdamW(attacker.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=5
    )

    def scores(x: torch.Tensor) -> np.ndarray:
        attacker.eval()
        with torch.no_grad():
            return attacker(x).numpy()

    best_val, best_epoch, best_state = -1.0, -1, None
    for epoch in range(epochs):
        attacker.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.binary_cross_entropy_with_logits(attacker(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_cmap = class_mean_average_precision(scores(x_val), val.labels)
        scheduler.step(val_cmap)
        if val_cmap > best_val:
            best_val, best_epoch, best_state = val_cmap, epoch, copy.deepcopy(attacker.state_dict())
    attacker.load_state_dict(best_state)
    test_scores = scores(x_test)
    return AttackerResult(
        test_cmap=class_mean_average_precision(test_scores, test.labels),
        val_cmap=best_val,
        chance_cmap=chance_cmap(test.labels),
        best_epoch=best_epoch,
        per_attribute_ap=per_attribute_average_precision(test_scores, np.asarray(test.labels)),
    )


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
    """Train a linear action classifier; features are (N, n_clips, d), labels (N,).

    Training uses every clip as an example; validation and test average each video's clip
    logits before the argmax.
    """
    mean, std = _standardizer(train.features)
    x_train = _to_tensor(train.features, mean, std)  # (N, n_clips, d)
    n_clips, d = x_train.shape[1], x_train.shape[2]
    y_train = torch.as_tensor(train.labels, dtype=torch.long).repeat_interleave(n_clips)
    x_train = x_train.reshape(-1, d)  # (N * n_clips, d)
    x_val, x_test = (_to_tensor(s.features, mean, std) for s in (val, test))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = nn.Linear(d, num_classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr)

    def video_logits(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return probe(x).mean(dim=1).numpy()  # (N, n_clips, C) -> (N, C)

    best_val, best_epoch, best_state = -1.0, -1, None
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(probe(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_top1 = top1_accuracy(video_logits(x_val), val.labels)
        if val_top1 > best_val:
            best_val, best_epoch, best_state = val_top1, epoch, copy.deepcopy(probe.state_dict())
    probe.load_state_dict(best_state)
    test_top1 = top1_accuracy(video_logits(x_test), test.labels)
    return ProbeResult(
        test_top1=test_top1,
        test_top1_se=accuracy_standard_error(test_top1, len(test.labels)),
        val_top1=best_val,
        best_epoch=best_epoch,
        num_test=len(test.labels),
    )
