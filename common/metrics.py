"""Metrics, as percentages (0-100) like the paper's tables.

- privacy: class-mean average precision (cMAP) of an attacker over the binary attributes;
  lower is more private. Chance is the cMAP of a constant scorer: each attribute's AP is then
  its prevalence.
- action recognition: top-1 accuracy, with its binomial standard error.
"""

from __future__ import annotations

import math

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one binary attribute (fraction 0-1): sum over thresholds of (R_n - R_{n-1}) * P_n.

    Tied scores form one threshold (as scikit-learn's average_precision_score does), so a
    constant scorer gets exactly the prevalence. Needs at least one positive.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    positives = int(labels.sum())
    if positives == 0:
        raise ValueError("average precision is undefined without a positive example")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    # Last index of each run of equal scores: one threshold per distinct score.
    ends = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    true_pos = np.cumsum(labels)[ends]
    precision = true_pos / (ends + 1)
    recall = true_pos / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def class_mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """cMAP in percent: the mean AP over attribute columns of (N, A) scores and 0/1 labels.

    Columns without a positive are skipped (their AP is undefined); with none left, an error.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, A)")
    aps = [
        average_precision(scores[:, a], labels[:, a])
        for a in range(labels.shape[1])
        if labels[:, a].any()
    ]
    if not aps:
        raise ValueError("no attribute has a positive example")
    return 100.0 * float(np.mean(aps))


def per_attribute_average_precision(scores: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """AP in percent for each attribute column (None where the column has no positive)."""
    return [
        100.0 * average_precision(scores[:, a], labels[:, a]) if labels[:, a].any() else None
        for a in range(labels.shape[1])
    ]


def chance_cmap(labels: np.ndarray) -> float:
    """cMAP in percent of a constant scorer on these labels: the mean attribute prevalence."""
    labels = np.asarray(labels).astype(bool)
    return class_mean_average_precision(np.zeros(labels.shape), labels)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of (N, C) scores against integer labels (N,)."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits {logits.shape} must be (N, C) and labels {labels.shape} (N,)")
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == labels))


def accuracy_standard_error(accuracy_percent: float, n: int) -> float:
    """Binomial standard error, in points, of an accuracy measured on n examples."""
    p = accuracy_percent / 100.0
    return 100.0 * math.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1))
