"""Temporal action detection (TAD): the action segments of an untrimmed video.

Labels: each video's segments in normalised time, rows (start, end, action), padded to
MAX_SEGMENTS rows of -1 so that videos stack. Clip i of a video's C clips covers [i/C, (i+1)/C).

Head: a small TriDet-style detector over the (B, T, d) sequence of anonymized clip features: a
two-level temporal feature pyramid (stride 1 and 2 clips), and at every instant of both levels
per-class logits (sigmoid focal loss) and the distances to the segment's start and end (DIoU
loss), positives chosen by centre sampling. Where it departs from TriDet, and why:
- no Trident-head (boundaries as distributions over neighbouring bins) and no SGP layers: with
  10 instants a video and segments of 1-3 clips there are too few bins for a distribution, and
  a few tens of thousands of parameters must train at every site; distances are regressed
  directly, as in ActionFormer, which TriDet builds on;
- every segment is a target at both levels (no per-level regression ranges): the pyramid is
  only two levels deep and the segments are all short.
TriDet's IoU-weighted positives are kept: a positive's classification target is the (detached)
IoU of its predicted segment to the power 0.2, so scores rank well-localised segments first
(TriDet takes the GIoU; segments around one point always overlap, so the two are equal).

Central protocol: a FRESH head trained on the train videos' anonymized features (standardised
with the train statistics), selected on val mAP, scored once on test (common.metrics.segment_map,
tIoU 0.3:0.1:0.7) with a bootstrap standard error over test videos.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.fitting import fit_selected_on_val
from common.metrics import (
    segment_map,
    segment_map_standard_error,
)
from common.probes import standardize
from common.tasks.base import TASKS, Task, TaskScore, TaskSplit

if TYPE_CHECKING:
    from common.config import EvaluationConfig, RunConfig

MAX_SEGMENTS = 8  # rows of a video's segment labels (the world plans 3-4 a video)
HIDDEN = 32  # channels of the head (about 22k parameters at d = 256)
CENTRE_RADIUS = 1.5  # positives: instants within this many of the level's instants of a centre
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # sigmoid focal loss (RetinaNet's, as TriDet uses)
IOU_WEIGHT_POWER = 0.2  # TriDet's exponent of the IoU that weights a positive's target
PRIOR_PROBABILITY = 0.01  # initial sigmoid score of every class (RetinaNet's bias init)
# Inference as TriDet's: (instant, class) scores above 0.001 are candidates, soft-NMS with sigma
# 0.5 and min score 0.001. A threshold this low keeps mAP a measure of ranking, so the co-trained
# head is scored from round one (with head_lr 1e-4 its scores stay near the 0.01 prior for long).
SCORE_THRESHOLD = 1e-3
CANDIDATES = 40  # at most this many of a video's best candidates enter soft-NMS
SOFT_NMS_SIGMA = 0.5  # Gaussian soft-NMS: a score decays by exp(-tIoU^2 / sigma)
MIN_SCORE = 1e-3  # soft-NMS drops candidates whose decayed score falls below this
TOP_K = 40  # detections kept per video (a video has 3-4 segments)
# The central protocol trains on whole videos, 24 of them in the default world: config's
# batch_size (256, counted in clips by the AR probe) would make one step an epoch. Batches of
# this many videos give the head enough steps in probe_epochs epochs.
TRAIN_VIDEOS_PER_BATCH = 4
BOOTSTRAP_RESAMPLES = 200  # test videos resampled for the standard error


# ---------------------------------------------------------------------------------------------
# The head


@dataclass(frozen=True)
class DetectionOutputs:
    """The head's outputs at the P points of all pyramid levels (level 0's T instants, then
    level 1's ceil(T / 2)), with where each point sits."""

    logits: torch.Tensor  # (B, P, K) class logits
    distances: torch.Tensor  # (B, P, 2) distances to start and end, in strides of the point
    centres: torch.Tensor  # (P,) each point's centre, in clips from the sequence start
    strides: torch.Tensor  # (P,) each point's stride in clips (1 or 2)
    valid: torch.Tensor  # (B, P) False where a point covers only padding
    lengths: torch.Tensor  # (B,) valid clips of each sequence: normalised time = clips / length


class TemporalConv(nn.Module):
    """A kernel-3 temporal convolution with zero padding on (B, T, c) sequences, written as one
    linear map of each instant and its two neighbours.

    Not nn.Conv1d: on a CPU shared with other processes, oneDNN's multi-threaded convolution of
    these tiny tensors waits on busy threads (measured 5-45 ms a call at load 7 on 2 cores, vs
    0.2 ms for this), and a central evaluation runs a few thousand of them.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (0, 0, 1, 1))  # (B, T + 2, c)
        windows = torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=-1)  # (B, T, 3c)
        return self.linear(windows)  # (B, T, out)


class TemporalDetectionHead(nn.Module):
    """(B, T, d) anonymized clip features -> DetectionOutputs (a two-level temporal pyramid
    with class and boundary-distance heads shared across levels)."""

    def __init__(self, dim: int, num_classes: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.project = nn.Linear(dim, hidden)
        self.level0 = TemporalConv(hidden, hidden)
        self.level1 = TemporalConv(hidden, hidden)
        self.cls_hidden = TemporalConv(hidden, hidden)
        self.cls_out = TemporalConv(hidden, num_classes)
        self.reg_hidden = TemporalConv(hidden, hidden)
        self.reg_out = TemporalConv(hidden, 2)
        self.scales = nn.Parameter(torch.ones(2))  # per-level scale of the distances
        prior_logit = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        nn.init.constant_(self.cls_out.linear.bias, prior_logit)

    def forward(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> DetectionOutputs:
        B, T, _ = features.shape
        valid0 = (
            torch.ones(B, T, dtype=torch.bool, device=features.device)
            if key_padding_mask is None
            else ~key_padding_mask
        )
        T1 = (T + 1) // 2
        valid1 = F.pad(valid0, (0, 2 * T1 - T)).view(B, T1, 2).any(dim=2)  # (B, T1)
        mask0 = valid0[..., None].to(features.dtype)  # (B, T, 1)
        mask1 = valid1[..., None].to(features.dtype)  # (B, T1, 1)
        # Padding is zeroed after every layer, so a padded sequence gives its valid instants
        # what the unpadded one would (the convolutions see zeros past the end either way).
        x = self.project(self.norm(features)) * mask0  # (B, T, h)
        level0 = F.relu(self.level0(x)) * mask0  # (B, T, h)
        # Level 1: instant j pools clips 2j and 2j + 1 (an odd T's last pools one clip); the
        # max of non-negative features ignores zeroed padding.
        pairs = F.pad(level0, (0, 0, 0, 2 * T1 - T)).view(B, T1, 2, -1)  # (B, T1, 2, h)
        level1 = F.relu(self.level1(pairs.amax(dim=2))) * mask1  # (B, T1, h)
        logits, distances = [], []
        for scale, level, mask in (
            (self.scales[0], level0, mask0),
            (self.scales[1], level1, mask1),
        ):
            logits.append(self.cls_out(F.relu(self.cls_hidden(level)) * mask))  # (B, T_l, K)
            raw = self.reg_out(F.relu(self.reg_hidden(level)) * mask)  # (B, T_l, 2)
            distances.append(F.softplus(scale * raw))  # non-negative
        return DetectionOutputs(
            logits=torch.cat(logits, dim=1),  # (B, P, K)
            distances=torch.cat(distances, dim=1),  # (B, P, 2)
            centres=torch.cat([torch.arange(T) + 0.5, 2.0 * torch.arange(T1) + 1.0]),  # (P,)
            strides=torch.cat([torch.ones(T), torch.full((T1,), 2.0)]),  # (P,)
            valid=torch.cat([valid0, valid1], dim=1),  # (B, P)
            lengths=valid0.sum(dim=1).to(features.dtype),  # (B,)
        )


# ---------------------------------------------------------------------------------------------
# Training targets and the loss


@dataclass(frozen=True)
class DetectionTargets:
    """What each point should predict: whether it is positive, its segment's class and its
    distances to that segment's start and end (in strides of the point)."""

    positive: torch.Tensor  # (B, P) bool
    classes: torch.Tensor  # (B, P) int64, meaningful at positives
    distances: torch.Tensor  # (B, P, 2), meaningful at positives


def assign_targets(outputs: DetectionOutputs, segments: torch.Tensor) -> DetectionTargets:
    """Centre sampling: a point is positive for a segment when its centre lies inside the
    segment and within CENTRE_RADIUS strides of the segment's centre; a point positive for
    several segments takes the shortest (ActionFormer's rule). Segments (B, S, 3) are rows
    (start, end, action) in normalised time, padding rows -1."""
    real = segments[..., 2] >= 0  # (B, S)
    start = segments[..., 0] * outputs.lengths[:, None]  # (B, S) in clips
    end = segments[..., 1] * outputs.lengths[:, None]
    centre = outputs.centres[None, :, None]  # (1, P, 1)
    stride = outputs.strides[None, :, None]
    inside = (centre >= start[:, None]) & (centre < end[:, None])  # (B, P, S)
    near = (centre - 0.5 * (start + end)[:, None]).abs() <= CENTRE_RADIUS * stride
    candidate = inside & near & real[:, None] & outputs.valid[..., None]  # (B, P, S)
    length = torch.where(candidate, (end - start)[:, None], torch.inf)  # (B, P, S)
    best = length.argmin(dim=2)  # (B, P)
    chosen_start = start.gather(1, best)  # (B, P)
    chosen_end = end.gather(1, best)
    distances = (
        torch.stack([outputs.centres - chosen_start, chosen_end - outputs.centres], dim=-1)
        / outputs.strides[None, :, None]
    )  # (B, P, 2)
    return DetectionTargets(
        positive=candidate.any(dim=2),
        classes=segments[..., 2].long().clamp_min(0).gather(1, best),
        distances=distances,
    )


def distance_iou(
    predicted: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and DIoU loss (1 - IoU + squared centre distance over the enclosing length squared)
    of 1-D segments given as (..., 2) distances from one point to their start and end."""
    inter = torch.minimum(predicted, target).sum(dim=-1)  # (...,)
    union = predicted.sum(dim=-1) + target.sum(dim=-1) - inter
    iou = inter / union.clamp_min(1e-6)
    enclosing = torch.maximum(predicted, target).sum(dim=-1)
    centre_gap = 0.5 * ((predicted[..., 1] - predicted[..., 0]) - (target[..., 1] - target[..., 0]))
    return iou, 1.0 - iou + (centre_gap / enclosing.clamp_min(1e-6)) ** 2


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Elementwise sigmoid focal loss (RetinaNet) with soft targets in [0, 1]."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probability * targets + (1 - probability) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return alpha_t * (1 - p_t) ** FOCAL_GAMMA * cross_entropy


def detection_loss(outputs: DetectionOutputs, segments: torch.Tensor) -> torch.Tensor:
    """TriDet's loss on a batch: focal classification over every valid point and class, plus
    the DIoU regression loss on the positives, each normalised by the number of positives."""
    targets = assign_targets(outputs, segments)
    positive = targets.positive  # (B, P)
    num_positives = positive.sum().clamp_min(1)
    iou, regression = distance_iou(outputs.distances[positive], targets.distances[positive])
    # IoU-weighted positives: a positive's class target is its detached IoU ** power.
    class_targets = torch.zeros_like(outputs.logits)  # (B, P, K)
    class_targets[positive, targets.classes[positive]] = (
        iou.detach().clamp_min(0) ** IOU_WEIGHT_POWER
    )
    focal = sigmoid_focal_loss(outputs.logits, class_targets)  # (B, P, K)
    classification = (focal * outputs.valid[..., None]).sum() / num_positives
    return classification + regression.sum() / num_positives


# ---------------------------------------------------------------------------------------------
# Inference


def soft_nms(
    segments: np.ndarray, classes: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Class-wise Gaussian soft-NMS of each video's candidates, all videos at once: the best
    is kept and every other score of its class decays by exp(-tIoU^2 / sigma), repeatedly;
    candidates below MIN_SCORE are dropped.

    segments (B, n, 2) in [0, 1], classes (B, n), scores (B, n) (absent candidates: 0).
    Returns (B, n) indices in the order kept and their decayed scores (0 past a video's last).
    """
    # Each class moved to its own stretch of time: no overlap across classes, one pass.
    shifted = segments + 2.0 * classes[..., None]  # (B, n, 2)
    lengths = shifted[..., 1] - shifted[..., 0]  # (B, n)
    scores = scores.astype(np.float64)
    live = scores >= MIN_SCORE  # (B, n)
    videos = np.arange(len(scores))
    kept = np.zeros(scores.shape, dtype=np.int64)
    kept_scores = np.zeros(scores.shape)
    for rank in range(scores.shape[1]):
        if not live.any():
            break
        top = np.where(live, scores, -np.inf).argmax(axis=1)  # (B,)
        found = live[videos, top]
        kept[:, rank] = top
        kept_scores[:, rank] = np.where(found, scores[videos, top], 0.0)
        live[videos, top] = False
        best = shifted[videos, top][:, None]  # (B, 1, 2)
        inter = np.maximum(
            np.minimum(best[..., 1], shifted[..., 1]) - np.maximum(best[..., 0], shifted[..., 0]),
            0.0,
        )  # (B, n)
        tiou = inter / np.maximum(lengths[videos, top][:, None] + lengths - inter, 1e-12)
        scores = np.where(live, scores * np.exp(-(tiou**2) / SOFT_NMS_SIGMA), scores)
        live &= scores >= MIN_SCORE
    return kept, kept_scores


def decode_detections(outputs: DetectionOutputs) -> list[np.ndarray]:
    """Each video's detections, (K, 4) rows (start, end, class, score) in normalised time,
    best first: its CANDIDATES best (point, class) pairs scoring above SCORE_THRESHOLD
    (sigmoid), decoded into segments clipped to the video, class-wise soft-NMS, the TOP_K
    best."""
    B, P, K = outputs.logits.shape
    scores = torch.sigmoid(outputs.logits.detach()) * outputs.valid[..., None]  # (B, P, K)
    score, pair = scores.reshape(B, P * K).topk(min(CANDIDATES, P * K), dim=1)  # (B, n)
    score = torch.where(score > SCORE_THRESHOLD, score, 0.0)
    point, cls = pair // K, pair % K  # (B, n)
    centre, stride = outputs.centres[point], outputs.strides[point]
    distances = outputs.distances.detach().gather(1, point[..., None].expand(-1, -1, 2))
    length = outputs.lengths[:, None]  # (B, 1)
    start = ((centre - distances[..., 0] * stride) / length).clamp(0, 1)  # (B, n)
    end = ((centre + distances[..., 1] * stride) / length).clamp(0, 1)
    segments = torch.stack([start, end], dim=-1).double().numpy()  # (B, n, 2)
    classes = cls.numpy()
    kept, kept_scores = soft_nms(segments, classes, score.numpy())
    detections = []
    for b in range(B):
        order = kept[b, kept_scores[b] > 0][:TOP_K]
        rows = [segments[b, order], classes[b, order, None], kept_scores[b, : len(order), None]]
        detections.append(np.concatenate(rows, axis=1))  # (K, 4)
    return detections


def ground_truth_segments(segments: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Each video's (G, 3) ground-truth rows from padded (N, MAX_SEGMENTS, 3) labels."""
    segments = np.asarray(segments, dtype=np.float64)
    return [video[video[:, 2] >= 0] for video in segments]


def detection_map(head: nn.Module, features: torch.Tensor, segments: np.ndarray) -> float:
    """mAP in percent of the head's detections on (N, C, d) features against padded labels."""
    with torch.no_grad():
        outputs = head(features)
    return segment_map(decode_detections(outputs), ground_truth_segments(segments))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (the previous count restored after).

    The head's tensors are tiny: threads only wait on each other, and on a CPU shared with
    other processes they wait for the scheduler too. One central evaluation on 24 / 8 / 24
    videos took 5 s with one thread and 38 s with two at load 2.6 on 2 cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# The task


class TemporalActionDetection(Task):
    name = "tad"
    dataset = "tad"
    metric = "map"
    title = "TAD mAP"
    whole_video = True  # the segments are placed in the whole video's time

    def labels(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Segments as (MAX_SEGMENTS, 3) float32 rows (start, end, action) in normalised time
        (frames / num_frames, end exclusive), padded with rows of -1."""
        segments = entry["labels"]["segments"]
        if len(segments) > MAX_SEGMENTS:
            raise ValueError(
                f"video {entry.get('video_id', '?')} has {len(segments)} action segments; the "
                f"TAD labels hold at most {MAX_SEGMENTS} (raise MAX_SEGMENTS in "
                "common.tasks.temporal_detection)"
            )
        num_frames = float(entry["num_frames"])
        rows = np.full((MAX_SEGMENTS, 3), -1.0, dtype=np.float32)
        for i, segment in enumerate(segments):
            rows[i] = (
                segment["start"] / num_frames,
                segment["end"] / num_frames,
                segment["action"],
            )
        return {"segments": rows}

    def action_clips(
        self, clips: np.ndarray, labels: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The clips whose centre lies inside exactly one labelled segment (start <= centre <
        end), under that segment's action; background clips and clips inside overlapping
        segments are left out. Computed as `assign_targets` places segments (float32, in clips
        from the sequence start), so that a boundary on a clip's centre falls the same way."""
        segments = np.asarray(labels["segments"], dtype=np.float32)  # (N, S, 3), padding -1
        num_clips = clips.shape[1]
        centres = np.arange(num_clips, dtype=np.float32) + np.float32(0.5)  # (C,) in clips
        length = np.float32(num_clips)
        start, end = (segments[..., k, None] * length for k in range(2))  # (N, S, 1) in clips
        action = segments[..., 2, None]
        inside = (centres >= start) & (centres < end) & (action >= 0)  # (N, S, C)
        keep = inside.sum(axis=1) == 1  # (N, C)
        which = inside.argmax(axis=1)  # (N, C) the segment a kept clip lies in
        classes = np.take_along_axis(segments[..., 2], which, axis=1)  # (N, C)
        return clips[keep], classes[keep].astype(np.int64)

    def build_head(self, dim: int, config: RunConfig) -> nn.Module:
        # The world's TAD videos use the action vocabulary of AR (simulations.worldfeatures).
        return TemporalDetectionHead(dim, config.heads.num_actions)

    def loss(
        self,
        head: nn.Module,
        anonymized: torch.Tensor,
        labels: dict[str, torch.Tensor],
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """TriDet's loss on (B, T, d) sequences of all of each video's clips (normalised time
        is relative to the valid clips of each sequence)."""
        return detection_loss(head(anonymized, key_padding_mask), labels["segments"])

    def site_metric(
        self, head: nn.Module, anonymized: torch.Tensor, labels: dict[str, torch.Tensor]
    ) -> float:
        """mAP of the co-trained head on a site's videos (N, C, d)."""
        return detection_map(head, anonymized, labels["segments"].numpy())

    def evaluate(
        self, splits: dict[str, TaskSplit], classes: tuple[str, ...], config: EvaluationConfig
    ) -> TaskScore:
        """A fresh head trained on the train videos (batches of TRAIN_VIDEOS_PER_BATCH videos,
        `probe_epochs` epochs at `probe_lr`), the epoch with the best val mAP kept; test mAP
        with its bootstrap standard error over BOOTSTRAP_RESAMPLES draws of the test videos."""
        features = standardize({s: split.clips for s, split in splits.items()})  # (N, C, d)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            head = TemporalDetectionHead(features["train"].shape[-1], len(classes))
        with one_thread():
            fit = fit_selected_on_val(
                head,
                detection_loss,
                features["train"],
                torch.as_tensor(splits["train"].labels["segments"], dtype=torch.float32),
                lambda: detection_map(head, features["val"], splits["val"].labels["segments"]),
                epochs=config.probe_epochs,
                lr=config.probe_lr,
                batch_size=min(config.batch_size, TRAIN_VIDEOS_PER_BATCH),
                seed=0,
            )
            with torch.no_grad():
                detections = decode_detections(head(features["test"]))
        ground_truth = ground_truth_segments(splits["test"].labels["segments"])
        return TaskScore(
            test=segment_map(detections, ground_truth),
            test_se=segment_map_standard_error(
                detections, ground_truth, resamples=BOOTSTRAP_RESAMPLES, seed=0
            ),
            val=fit.best_score,
            num_test=len(ground_truth),
            test_outputs=detections,
        )

    def change_standard_error(
        self, score: TaskScore, baseline: TaskScore, test_labels: dict[str, np.ndarray]
    ) -> float | None:
        return segment_map_standard_error(
            score.test_outputs,
            ground_truth_segments(test_labels["segments"]),
            resamples=BOOTSTRAP_RESAMPLES,
            baseline=baseline.test_outputs,
        )


TASKS.register("tad")(TemporalActionDetection())
