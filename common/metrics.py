"""Metrics, as percentages (0-100) like the paper's tables.

- privacy: class-mean average precision (cMAP) of an attacker over the binary attributes;
  lower is more private. Chance is the cMAP of a constant scorer: each attribute's AP is then
  its prevalence.
- action recognition: top-1 accuracy, with its binomial standard error.
- temporal action detection: segment mAP (THUMOS14 / ActivityNet protocol) averaged over tIoU
  thresholds, with a bootstrap standard error over videos.
- anomaly detection: frame-level ROC AUC over every frame of every video (the paper's
  UCF-Crime protocol), from per-segment scores spread over each segment's frames, with a
  bootstrap standard error over videos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def paired_accuracy_standard_error(correct: np.ndarray, baseline_correct: np.ndarray) -> float:
    """Standard error, in points, of the difference of two accuracies measured on the SAME
    examples (0/1 arrays, one entry per example): what the examples' shared difficulty does not
    blur, so a change can be smaller than either accuracy's own standard error and still show."""
    correct, baseline_correct = np.asarray(correct, float), np.asarray(baseline_correct, float)
    if correct.shape != baseline_correct.shape or correct.ndim != 1:
        raise ValueError(
            f"paired accuracies need two (N,) arrays, got {correct.shape} and "
            f"{baseline_correct.shape}"
        )
    if len(correct) < 2:
        return 0.0
    return 100.0 * float(np.std(correct - baseline_correct, ddof=1) / math.sqrt(len(correct)))


def bootstrap_standard_error(
    n: int, statistic: Callable[[np.ndarray], float | None], resamples: int = 200, seed: int = 0
) -> tuple[float, int]:
    """The standard deviation of `statistic(indices)` over `resamples` draws of n indices with
    replacement (seeded), and how many draws had a value (a statistic returns None where it is
    undefined on a draw, e.g. an AUC of frames of one kind). 0.0 with fewer than 2 values."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = statistic(rng.integers(0, n, n))
        if value is not None:
            values.append(value)
    return (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0), len(values)


# ---------------------------------------------------------------------------------------------
# Temporal action detection

TIOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # THUMOS14's, as TriDet reports them


def temporal_iou(segments: np.ndarray, others: np.ndarray) -> np.ndarray:
    """tIoU of every [start, end) segment of (K, 2) with every one of (G, 2) -> (K, G)."""
    a, b = segments[:, None], others[None]  # (K, 1, 2), (1, G, 2)
    inter = np.maximum(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return inter / np.maximum(union, 1e-12)


@dataclass(frozen=True)
class MatchedDetections:
    """One video's detections matched to its ground truth: each detection's class and score,
    sorted by score (K,), whether it is a true positive at each tIoU threshold (K, n_thr), and
    the class of each ground-truth segment (G,).

    A detection's match depends only on its own video's higher-scored detections, so matching
    is done once per video and a bootstrap over videos only re-ranks the matches.
    """

    classes: np.ndarray
    scores: np.ndarray
    true_positive: np.ndarray
    gt_classes: np.ndarray


def match_detections(
    detections: np.ndarray,
    ground_truth: np.ndarray,
    tiou_thresholds: Sequence[float] = TIOU_THRESHOLDS,
) -> MatchedDetections:
    """Match one video's detections (K, 4) rows (start, end, class, score) to its ground truth
    (G, 3) rows (start, end, class), greedily in score order (ties: input order): a detection
    is a true positive at a threshold when an unmatched segment of its class overlaps it by at
    least that tIoU; it takes the best-overlapping such segment (ActivityNet's rule)."""
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    ground_truth = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 3)
    detections = detections[np.argsort(-detections[:, 3], kind="stable")]
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    true_positive = np.zeros((len(detections), len(thresholds)), dtype=bool)
    for cls in np.unique(detections[:, 2]):
        rows = np.nonzero(detections[:, 2] == cls)[0]
        gts = ground_truth[ground_truth[:, 2] == cls, :2]
        if not len(gts):
            continue
        # Every threshold at once: matched[j, g] says segment g is taken at threshold j.
        matched = np.zeros((len(thresholds), len(gts)), dtype=bool)
        every = np.arange(len(thresholds))
        tiou = temporal_iou(detections[rows, :2], gts)  # (Kc, Gc)
        for k, overlaps in zip(rows, tiou, strict=True):
            free = ~matched & (overlaps[None] >= thresholds[:, None])  # (n_thr, Gc)
            best = np.argmax(np.where(free, overlaps[None], -1.0), axis=1)  # (n_thr,)
            hit = free[every, best]
            matched[every[hit], best[hit]] = True
            true_positive[k] = hit
    return MatchedDetections(
        classes=detections[:, 2].astype(np.int64),
        scores=detections[:, 3],
        true_positive=true_positive,
        gt_classes=ground_truth[:, 2].astype(np.int64),
    )


def _interpolated_average_precision(true_positive: np.ndarray, num_positives: int) -> np.ndarray:
    """All-point interpolated AP (fraction) of ranked detections, per column of (K, n_thr)
    true-positive flags: the area under the precision envelope (the precision at a recall is
    the best precision at that recall or any higher one), as ActivityNet computes it."""
    hits = np.cumsum(true_positive, axis=0)  # (K, n_thr)
    ranks = np.arange(1, len(true_positive) + 1)[:, None]  # (K, 1)
    precision = hits / ranks
    recall = hits / num_positives
    zeros = np.zeros((1, true_positive.shape[1]))
    precision = np.concatenate([zeros, precision, zeros])  # (K + 2, n_thr)
    recall = np.concatenate([zeros, recall, zeros + 1.0])
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    # Area of the envelope's steps: recall grows only at true positives, where the envelope
    # applies; the appended recall of 1 has precision 0 and adds nothing.
    return np.sum(np.diff(recall, axis=0) * envelope[1:], axis=0)


def _map_of_matches(matches: Sequence[MatchedDetections], num_thresholds: int) -> float:
    """mAP in percent of several videos' matched detections: AP per class with ground truth
    and threshold, averaged over classes, then over thresholds."""
    gt_classes = np.concatenate([m.gt_classes for m in matches])
    present, counts = np.unique(gt_classes, return_counts=True)
    if not len(present):
        raise ValueError("segment mAP is undefined without a ground-truth segment")
    classes = np.concatenate([m.classes for m in matches])
    scores = np.concatenate([m.scores for m in matches])
    true_positive = np.concatenate([m.true_positive for m in matches]).reshape(-1, num_thresholds)
    # A stable sort keeps each video's own order of tied scores, the order it was matched in.
    order = np.argsort(-scores, kind="stable")
    classes, true_positive = classes[order], true_positive[order]
    aps = np.stack(
        [
            _interpolated_average_precision(true_positive[classes == cls], int(count))
            for cls, count in zip(present, counts, strict=True)
        ]
    )  # (num_classes_with_gt, n_thr)
    return 100.0 * float(aps.mean(axis=0).mean())


def _match_videos(
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    tiou_thresholds: Sequence[float],
) -> list[MatchedDetections]:
    if len(predictions) != len(ground_truth):
        raise ValueError(
            f"{len(predictions)} videos of predictions but {len(ground_truth)} of ground truth"
        )
    return [
        match_detections(p, g, tiou_thresholds)
        for p, g in zip(predictions, ground_truth, strict=True)
    ]


def segment_map(
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    tiou_thresholds: Sequence[float] = TIOU_THRESHOLDS,
) -> float:
    """Temporal action detection mAP in percent, the THUMOS14 / ActivityNet protocol.

    predictions: one (K, 4) array per video, rows (start, end, class, score);
    ground_truth: one (G, 3) array per video (same order), rows (start, end, class).
    Times in any one unit (here normalised to [0, 1]); segments are [start, end).
    Per threshold and class: detections of all videos ranked by score, each matched greedily
    (match_detections), AP the area under the interpolated precision-recall curve. The mAP
    averages AP over the classes that have ground truth (detections of other classes are
    ignored), then over the thresholds.
    """
    matches = _match_videos(predictions, ground_truth, tiou_thresholds)
    return _map_of_matches(matches, len(tiou_thresholds))


def segment_map_standard_error(
    predictions: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    tiou_thresholds: Sequence[float] = TIOU_THRESHOLDS,
    resamples: int = 200,
    seed: int = 0,
    baseline: Sequence[np.ndarray] | None = None,
) -> float:
    """Bootstrap standard error, in points, of `segment_map` over videos: the standard deviation
    of the mAP of `resamples` sets of videos drawn with replacement (seeded). With `baseline`
    (other predictions for the same videos), of the mAP's change from the baseline's: both
    scored on each draw.

    mAP is not a mean over videos, so it has no closed-form error like accuracy's; resampling
    the videos, the unit the test set was drawn in, measures how much it moves with them.
    """
    matches = _match_videos(predictions, ground_truth, tiou_thresholds)
    others = None if baseline is None else _match_videos(baseline, ground_truth, tiou_thresholds)

    def statistic(drawn: np.ndarray) -> float | None:
        if not any(len(matches[i].gt_classes) for i in drawn):  # no segments drawn: no mAP
            return None
        value = _map_of_matches([matches[i] for i in drawn], len(tiou_thresholds))
        if others is None:
            return value
        return value - _map_of_matches([others[i] for i in drawn], len(tiou_thresholds))

    return bootstrap_standard_error(len(matches), statistic, resamples, seed)[0]


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
    if not np.isfinite(scores).all():  # (a diverged head; scikit-learn refuses them too)
        raise ValueError("frame scores must be finite; some are NaN or infinite")
    # The Mann-Whitney form of the AUC, with tied scores sharing their average rank: equal to
    # scikit-learn's roc_auc_score (tests/common/test_metrics.py), which an evaluation calls
    # about 900 times (the AD bootstrap) and which spent 12 s of a 47 s evaluation checking
    # its inputs.
    ranks = _average_ranks(scores)
    positives = labels == 1
    n_pos = int(positives.sum())
    n_neg = labels.size - n_pos
    rank_sum = float(ranks[positives].sum())
    return 100.0 * (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` (1-D), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Each run of equal values [first, last] takes the rank (first + last) / 2 + 1.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size] - 1
    run_ranks = (starts + ends) / 2.0 + 1.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts + 1)
    return ranks


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
    baseline: np.ndarray | None = None,
) -> float:
    """Standard error in points of `video_frame_auc`: the standard deviation of the frame AUC
    over `resamples` resamplings of the videos with replacement (seeded). With `baseline`
    (other segment scores of the same videos), of the AUC's change from the baseline's: both
    scored on each draw. A resample without normal or anomalous frames (e.g. only normal videos
    drawn) has no AUC and is skipped."""
    frames = _frames_of_videos(segment_scores, anomalies, num_frames)
    others = None if baseline is None else _frames_of_videos(baseline, anomalies, num_frames)

    def statistic(drawn: np.ndarray) -> float | None:
        auc = _drawn_frame_auc(frames, drawn)
        if auc is None or others is None:
            return auc
        return auc - _drawn_frame_auc(others, drawn)

    se, valid = bootstrap_standard_error(len(frames), statistic, resamples, seed)
    if valid < 2:
        raise ValueError("too few bootstrap resamples hold both normal and anomalous frames")
    return se


def _drawn_frame_auc(frames: list[tuple[np.ndarray, np.ndarray]], drawn: np.ndarray):
    """The frame AUC of the drawn videos, None when they hold frames of one kind only."""
    labels = np.concatenate([frames[i][1] for i in drawn])
    if labels.min() == labels.max():
        return None
    return frame_auc(np.concatenate([frames[i][0] for i in drawn]), labels)
