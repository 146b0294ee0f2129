"""Temporal action detection (common.tasks.temporal_detection): labels, the head on even and
odd lengths, centre sampling, the loss, decoding and the central protocol on generated videos."""

import math

import numpy as np
import pytest
import torch

from common.config import EvaluationConfig
from common.tasks import TaskSplit, get_task
from common.tasks.temporal_detection import (
    MAX_SEGMENTS,
    SOFT_NMS_SIGMA,
    DetectionOutputs,
    TemporalDetectionHead,
    assign_targets,
    decode_detections,
    detection_loss,
    one_thread,
)

CLASSES = tuple(f"action{i}" for i in range(8))
FRAMES, CLIPS, CLIP_FRAMES = 160, 10, 16


def tad_videos(n: int, seed: int, dim: int = 32, signal: float = 3.0):
    """Videos like the world's `tad` ones: 3-4 segments of 20-40 frames apart by idle gaps.
    Each clip's features are noise plus the prototype of every action it overlaps, weighted
    by the overlap (signal 0: noise only). Returns (N, C, d) clips and (N, 8, 3) labels."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(1000).normal(size=(len(CLASSES), dim))
    clips = rng.normal(size=(n, CLIPS, dim)).astype(np.float32)
    task = get_task("tad")
    labels = []
    for v in range(n):
        segments, start = [], int(rng.integers(4, 14))
        while len(segments) < 4 and start + 40 <= FRAMES:
            end = start + int(rng.integers(20, 41))
            action = int(rng.integers(len(CLASSES)))
            segments.append({"start": start, "end": end, "action": action})
            for c in range(CLIPS):
                overlap = min(end, (c + 1) * CLIP_FRAMES) - max(start, c * CLIP_FRAMES)
                clips[v, c] += signal * max(overlap, 0) / CLIP_FRAMES * prototypes[action]
            start = end + int(rng.integers(6, 20))
        labels.append(task.labels({"labels": {"segments": segments}, "num_frames": FRAMES}))
    return clips, np.stack([lab["segments"] for lab in labels])


def test_labels_are_normalised_segments_padded_with_minus_one():
    entry = {
        "video_id": "tad_0001",
        "num_frames": 160,
        "labels": {
            "segments": [
                {"start": 9, "end": 29, "action": 1, "action_name": "walk_right"},
                {"start": 40, "end": 80, "action": 5, "action_name": "wave"},
                {"start": 100, "end": 124, "action": 0, "action_name": "walk_left"},
            ]
        },
    }
    segments = get_task("tad").labels(entry)["segments"]
    assert segments.dtype == np.float32 and segments.shape == (MAX_SEGMENTS, 3)
    np.testing.assert_allclose(
        segments[:3], [[9 / 160, 29 / 160, 1], [0.25, 0.5, 5], [100 / 160, 124 / 160, 0]]
    )
    assert (segments[3:] == -1).all()
    entry["labels"]["segments"] *= 3  # 9 segments
    with pytest.raises(ValueError, match="tad_0001 has 9 action segments"):
        get_task("tad").labels(entry)


@pytest.mark.parametrize(("length", "level1"), [(10, 5), (7, 4), (1, 1)])
def test_head_outputs_a_point_per_instant_of_both_levels(length, level1):
    torch.manual_seed(0)
    head = TemporalDetectionHead(256, len(CLASSES))
    outputs = head(torch.randn(3, length, 256))
    points = length + level1
    assert outputs.logits.shape == (3, points, len(CLASSES))
    assert outputs.distances.shape == (3, points, 2) and (outputs.distances >= 0).all()
    # Level 1's instant j pools clips 2j and 2j + 1 (an odd length's last pools one clip).
    np.testing.assert_allclose(outputs.centres[length:], 2 * np.arange(level1) + 1)
    assert outputs.valid.all() and (outputs.lengths == length).all()


def test_padded_instants_change_neither_the_valid_outputs_nor_the_loss():
    torch.manual_seed(0)
    head = TemporalDetectionHead(16, len(CLASSES))
    clips, segments = tad_videos(2, seed=0, dim=16)
    # Seven clips (level 1: 4 instants) and the same seven padded to ten with other features.
    short = torch.from_numpy(clips[:, :7])
    padded = torch.cat([short, 50 * torch.randn(2, 3, 16)], dim=1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 7:] = True
    labels = torch.from_numpy(segments)
    plain, masked = head(short), head(padded, mask)
    keep = torch.cat([torch.arange(7), 10 + torch.arange(4)])  # the padded run's valid points
    assert masked.valid[:, keep].all() and not masked.valid[:, 7:10].any()
    torch.testing.assert_close(masked.logits[:, keep], plain.logits)
    torch.testing.assert_close(masked.distances[:, keep], plain.distances)
    torch.testing.assert_close(detection_loss(masked, labels), detection_loss(plain, labels))


def test_centre_sampling_marks_instants_near_a_segment_centre_inside_it():
    outputs = TemporalDetectionHead(8, len(CLASSES))(torch.zeros(1, 10, 8))
    # Frames 9-29 of 160 are clips 0.5625-1.8125: only level 0's instant 1 (centre 1.5) and
    # level 1's instant 0 (centre 1) lie inside; both within 1.5 strides of the centre 1.1875.
    short = torch.tensor([[[9 / 160, 29 / 160, 3]] + [[-1.0, -1.0, -1.0]] * 7])
    targets = assign_targets(outputs, short)
    assert targets.positive[0].nonzero().flatten().tolist() == [1, 10]
    assert targets.classes[0, [1, 10]].tolist() == [3, 3]
    torch.testing.assert_close(
        targets.distances[0, [1, 10]],
        torch.tensor([[1.5 - 0.5625, 1.8125 - 1.5], [(1 - 0.5625) / 2, (1.8125 - 1) / 2]]),
    )
    # The whole video: centre 5 clips; level 0's centres 3.5-6.5 and level 1's 3-7 are within
    # 1.5 of their stride (1 and 2 clips) of it.
    whole = torch.tensor([[[0.0, 1.0, 6]] + [[-1.0, -1.0, -1.0]] * 7])
    positive = assign_targets(outputs, whole).positive[0]
    assert positive.nonzero().flatten().tolist() == [3, 4, 5, 6, 11, 12, 13]


def train_head(clips, segments, steps):
    torch.manual_seed(0)
    head = TemporalDetectionHead(clips.shape[-1], len(CLASSES))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    task = get_task("tad")
    features, labels = torch.from_numpy(clips), {"segments": torch.from_numpy(segments)}
    losses = []
    with one_thread():  # tiny tensors: threads only wait on each other (see one_thread)
        for _ in range(steps):
            loss = task.loss(head, features, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return head.eval(), losses


def test_the_loss_falls_and_the_site_metric_rises_on_planted_actions():
    clips, segments = tad_videos(16, seed=1)
    task = get_task("tad")
    features, labels = torch.from_numpy(clips), {"segments": torch.from_numpy(segments)}
    untrained, _ = train_head(clips, segments, steps=0)
    head, losses = train_head(clips, segments, steps=40)
    assert losses[-1] < 0.5 * losses[0]
    before = task.site_metric(untrained, features, labels)
    after = task.site_metric(head, features, labels)
    assert after > before + 30


def outputs_with(logits: torch.Tensor, distances: torch.Tensor) -> DetectionOutputs:
    """Outputs of one video of T = 10 clips at level 0's points only."""
    return DetectionOutputs(
        logits=logits[None],
        distances=distances[None],
        centres=torch.arange(10) + 0.5,
        strides=torch.ones(10),
        valid=torch.ones(1, 10, dtype=torch.bool),
        lengths=torch.tensor([10.0]),
    )


def test_decoding_turns_confident_points_into_segments_with_classwise_soft_nms():
    logits = torch.full((10, len(CLASSES)), -10.0)
    distances = torch.ones(10, 2)
    # Instant 3 (centre 3.5 clips) is action 2 with distances 1 and 2: [2.5, 5.5] clips.
    logits[3, 2], distances[3] = 5.0, torch.tensor([1.0, 2.0])
    (found,) = decode_detections(outputs_with(logits, distances))
    np.testing.assert_allclose(found, [[0.25, 0.55, 2, torch.sigmoid(torch.tensor(5.0))]])

    # Instant 4 predicts [3.5, 5.5] clips, tIoU 2/3 with instant 3's: as action 2 its score
    # decays by exp(-(2/3)^2 / sigma); as action 5 it is kept as it is.
    logits[4, 2], distances[4] = 3.0, torch.tensor([1.0, 1.0])
    (found,) = decode_detections(outputs_with(logits, distances))
    decay = math.exp(-((2 / 3) ** 2) / SOFT_NMS_SIGMA)
    assert found.shape == (2, 4)
    np.testing.assert_allclose(found[1], [0.35, 0.55, 2, decay / (1 + math.exp(-3))], rtol=1e-5)
    logits[4, 5], logits[4, 2] = 3.0, -10.0
    (found,) = decode_detections(outputs_with(logits, distances))
    np.testing.assert_allclose(found[1], [0.35, 0.55, 5, 1 / (1 + math.exp(-3))], rtol=1e-5)
    # Segments are clipped to the video.
    distances[3] = torch.tensor([9.0, 9.0])
    (found,) = decode_detections(outputs_with(logits, distances))
    np.testing.assert_allclose(found[0, :2], [0.0, 1.0])

    # Videos decoded together are decoded as they are alone (soft-NMS runs on all at once).
    torch.manual_seed(0)
    other = (torch.randn(10, len(CLASSES)), torch.rand(10, 2) * 3)
    alone = [decode_detections(outputs_with(*video))[0] for video in ((logits, distances), other)]
    first, second = (outputs_with(*video) for video in ((logits, distances), other))
    together = decode_detections(
        DetectionOutputs(
            logits=torch.cat([first.logits, second.logits]),
            distances=torch.cat([first.distances, second.distances]),
            centres=first.centres,
            strides=first.strides,
            valid=torch.ones(2, 10, dtype=torch.bool),
            lengths=torch.tensor([10.0, 10.0]),
        )
    )
    assert len(together[1]) > 2
    for joint, single in zip(together, alone, strict=True):
        np.testing.assert_allclose(joint, single)


def splits(signal: float) -> dict[str, TaskSplit]:
    return {
        split: TaskSplit(*(lambda c, s: (c, {"segments": s}))(*tad_videos(n, seed, signal=signal)))
        for split, n, seed in (("train", 24, 11), ("val", 8, 12), ("test", 24, 13))
    }


def test_the_central_protocol_detects_planted_actions_and_not_noise():
    task = get_task("tad")
    config = EvaluationConfig(probe_epochs=30)
    threads = torch.get_num_threads()
    planted = task.evaluate(splits(3.0), CLASSES, config)
    noise = task.evaluate(splits(0.0), CLASSES, config)
    assert torch.get_num_threads() == threads  # evaluate runs on one thread, then restores
    assert planted.num_test == 24 and 0 < planted.test_se < 10
    assert planted.test > 70 and planted.val > 70
    assert noise.test < 25
