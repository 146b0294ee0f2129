"""Metrics, as percentages (0-100) like the paper's tables.

- privacy: class-mean average precision (cMAP) of an attacker over the binary attributes;
  lower is more private. Chance is the cMAP of a constant scorer: each attribute's AP is then
  its prevalence.
- action recognition: top-1 accuracy, with its binomial standard error.
- anomaly detection: frame-level ROC AUC over every frame of every video (the paper's
  UCF-Crime protocol), from per-segment scores spread over each segment's frames, with a
  bootstrap standard error over videos.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


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


def frame_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Frame-level ROC AUC in percent of per-frame scores against 0/1 labels (any shape, same
    size; ties count one half, as scikit-learn's roc_auc_score)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("frame labels must be 0 (normal) or 1 (anomalous)")
    if labels.size == 0 or labels.min() == labels.max():
        kind = "no frames" if labels.size == 0 else "only normal or only anomalous frames"
        raise ValueError(f"frame AUC needs normal and anomalous frames; these labels have {kind}")
    return 100.0 * float(roc_auc_score(labels.astype(np.int64), scores))


def frames_of_video(
    segment_scores: np.ndarray, anomalies: np.ndarray, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """A video's per-frame scores and 0/1 labels, (num_frames,) each.

    Segment i of C covers normalised time [i/C, (i+1)/C): frame f (time [f/F, (f+1)/F)) takes
    the score of the segment it starts in, floor(f * C / F). `anomalies` is (K, 2) rows
    [start, end) in normalised time, rows with a negative start being padding; frame f is
    anomalous when start * F <= f < end * F, the bounds rounded to whole frames (they were
    frame numbers).
    """
    segment_scores = np.asarray(segment_scores, dtype=np.float64).ravel()  # (C,)
    anomalies = np.asarray(anomalies, dtype=np.float64).reshape(-1, 2)  # (K, 2)
    num_frames = int(num_frames)
    if num_frames < 1 or segment_scores.size == 0:
        raise ValueError(
            f"a video needs frames and segments, got {num_frames} frames and "
            f"{segment_scores.size} segments"
        )
    frames = np.arange(num_frames)
    scores = segment_scores[frames * segment_scores.size // num_frames]  # (F,)
    labels = np.zeros(num_frames, dtype=np.int64)
    for start, end in anomalies:
        if start < 0:
            continue
        labels[round(start * num_frames) : round(end * num_frames)] = 1
    return scores, labels


def _frames_of_videos(
    segment_scores: np.ndarray, anomalies: np.ndarray, num_frames: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`frames_of_video` of each of N videos (N-first arrays of one length)."""
    if not len(segment_scores) == len(anomalies) == len(num_frames):
        raise ValueError(
            f"{len(segment_scores)} videos' scores, {len(anomalies)} videos' anomalies and "
            f"{len(num_frames)} frame counts: they must describe the same videos"
        )
    return [
        frames_of_video(*video) for video in zip(segment_scores, anomalies, num_frames, strict=True)
    ]


def frames_of_videos(
    segment_scores: np.ndarray, anomalies: np.ndarray, num_frames: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's score and 0/1 label over N videos, concatenated in video order: segment
    scores (N, C), anomaly ranges (N, K, 2) as in `frames_of_video`, frame counts (N,)."""
    frames = _frames_of_videos(segment_scores, anomalies, num_frames)
    return np.concatenate([s for s, _ in frames]), np.concatenate([y for _, y in frames])


def video_frame_auc(
    segment_scores: np.ndarray, anomalies: np.ndarray, num_frames: np.ndarray
) -> float:
    """Frame AUC in percent over all frames of N videos (arrays as in `frames_of_videos`)."""
    return frame_auc(*frames_of_videos(segment_scores, anomalies, num_frames))


def frame_auc_standard_error(
    segment_scores: np.ndarray,
    anomalies: np.ndarray,
    num_frames: np.ndarray,
    resamples: int = 200,
    seed: int = 0,
) -> float:
    """Standard error in points of `video_frame_auc`: the standard deviation of the frame AUC
    over `resamples` resamplings of the videos with replacement (seeded). A resample without
    normal or anomalous frames (e.g. only normal videos drawn) has no AUC and is skipped."""
    frames = _frames_of_videos(segment_scores, anomalies, num_frames)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        drawn = [frames[i] for i in rng.integers(0, len(frames), len(frames))]
        labels = np.concatenate([y for _, y in drawn])
        if labels.min() == labels.max():
            continue
        aucs.append(frame_auc(np.concatenate([s for s, _ in drawn]), labels))
    if len(aucs) < 2:
        raise ValueError("too few bootstrap resamples hold both normal and anomalous frames")
    return float(np.std(aucs, ddof=1))
