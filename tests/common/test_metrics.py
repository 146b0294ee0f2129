"""Tests for AP/cMAP, chance cMAP, top-1 accuracy, segment mAP and the frame AUC of anomaly
detection."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.metrics import (
    accuracy_standard_error,
    average_precision,
    chance_cmap,
    class_mean_average_precision,
    frame_auc,
    frame_auc_standard_error,
    frames_of_video,
    paired_accuracy_standard_error,
    segment_map,
    segment_map_standard_error,
    top1_accuracy,
    video_frame_auc,
)


def test_average_precision_by_hand():
    # Ranked: +, -, +, -  -> precision at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2.
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    labels = np.array([1, 0, 1, 0])
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    # Reversed: -, +, -, +  -> precision 1/2 and 2/4 -> AP = 0.5.
    assert average_precision(-scores, labels) == pytest.approx(0.5)


def test_ties_form_one_threshold_so_a_constant_scorer_gets_the_prevalence():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 0])
    assert average_precision(np.zeros(8), labels) == pytest.approx(0.25)
    assert average_precision(
        np.array([1, 1, 0, 0, 0, 0, 0, 0.0]), np.array([1, 0, 1, 0, 0, 0, 0, 0])
    ) == (pytest.approx(0.5 * 0.5 + 0.5 * 2 / 8))


def test_cmap_skips_attributes_without_positives_and_chance_is_mean_prevalence():
    labels = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]])
    perfect = labels.astype(float)
    assert class_mean_average_precision(perfect, labels) == pytest.approx(100.0)
    assert chance_cmap(labels) == pytest.approx(100 * (0.5 + 0.5) / 2)
    with pytest.raises(ValueError, match="no attribute"):
        class_mean_average_precision(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(N, A\)"):
        class_mean_average_precision(np.zeros((2, 3)), np.zeros((2, 2)))


def test_top1_and_standard_error():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1_accuracy(logits, np.array([1, 0, 0, 0])) == pytest.approx(75.0)
    assert accuracy_standard_error(80.0, 2000) == pytest.approx(100 * math.sqrt(0.16 / 2000))


# Segment mAP. Ground truth rows (start, end, class); detections (start, end, class, score).
GROUND_TRUTH = [
    np.array([[0.05, 0.25, 0], [0.55, 0.75, 1]]),
    np.array([[0.1, 0.3, 0], [0.5, 0.7, 2]]),
]


def perfect(ground_truth):
    return [np.c_[g, np.full(len(g), 0.9)] for g in ground_truth]


def test_segment_map_of_a_perfect_prediction_is_100_and_of_a_reversed_one_0():
    assert segment_map(perfect(GROUND_TRUTH), GROUND_TRUTH) == pytest.approx(100.0)
    # Time reversed, these segments overlap no segment of their class.
    reversed_ = [np.c_[1 - p[:, 1], 1 - p[:, 0], p[:, 2:]] for p in perfect(GROUND_TRUTH)]
    assert segment_map(reversed_, GROUND_TRUTH) == pytest.approx(0.0)


def test_a_shift_by_half_a_segment_counts_only_at_the_lowest_threshold():
    # Every segment is 0.2 long; shifted by 0.1 its tIoU is 0.1 / 0.3 = 1/3: a hit at 0.3 only.
    shifted = [np.c_[p[:, :2] + 0.1, p[:, 2:]] for p in perfect(GROUND_TRUTH)]
    assert segment_map(shifted, GROUND_TRUTH) == pytest.approx(100.0 / 5)
    assert segment_map(shifted, GROUND_TRUTH, tiou_thresholds=(0.3,)) == pytest.approx(100.0)


def test_matching_is_greedy_in_score_order_and_each_segment_matches_once():
    ground_truth = [np.array([[0.0, 0.4, 0]])]
    # The first detection has tIoU 0.55, the second (ranked lower) tIoU 1. At 0.3-0.5 the first
    # takes the segment and the second is a duplicate: AP 1. At 0.6 and 0.7 the first misses
    # and the second hits at rank 2: precision 1/2 at recall 1, AP 0.5.
    detections = [np.array([[0.0, 0.22, 0, 0.9], [0.0, 0.4, 0, 0.8]])]
    assert segment_map(detections, ground_truth) == pytest.approx(100 * (1 + 1 + 1 + 0.5 + 0.5) / 5)


def test_a_false_positive_ranked_first_lowers_ap_by_the_envelope():
    ground_truth = [np.array([[0.1, 0.2, 0], [0.6, 0.8, 0]])]
    hits = np.array([[0.1, 0.2, 0, 0.8], [0.6, 0.8, 0, 0.7]])
    assert segment_map([hits], ground_truth) == pytest.approx(100.0)
    # Ranked last, a false positive does not lower the interpolated AP.
    last = np.r_[hits, [[0.3, 0.5, 0, 0.1]]]
    assert segment_map([last], ground_truth) == pytest.approx(100.0)
    # Ranked first: precision 1/2 and 2/3 at recall 1/2 and 1; the envelope is 2/3 at both.
    first = np.r_[hits, [[0.3, 0.5, 0, 0.9]]]
    assert segment_map([first], ground_truth) == pytest.approx(100 * 2 / 3)
    # Ranked between: precision 1 at recall 1/2, then 2/3 at recall 1 -> (1 + 2/3) / 2.
    middle = np.r_[hits, [[0.3, 0.5, 0, 0.75]]]
    assert segment_map([middle], ground_truth) == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_segment_map_averages_classes_with_ground_truth_only_and_matches_within_a_video():
    detections = perfect(GROUND_TRUTH)
    # A class without ground truth does not count, however confident its detections are.
    extra = [np.r_[[[0.0, 1.0, 7, 0.99]], d] for d in detections]
    assert segment_map(extra, GROUND_TRUTH) == pytest.approx(100.0)
    # Class 2's detection moved to the other video matches nothing: classes 0 and 1 keep AP 1,
    # class 2 gets 0 -> mAP 2/3.
    moved = [np.r_[detections[0], detections[1][1:]], detections[1][:1]]
    assert segment_map(moved, GROUND_TRUTH) == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError, match="without a ground-truth segment"):
        segment_map([np.zeros((0, 4))], [np.zeros((0, 3))])
    with pytest.raises(ValueError, match="2 videos of predictions but 1"):
        segment_map(detections, GROUND_TRUTH[:1])


def test_segment_map_standard_error_is_zero_when_every_video_is_perfect_and_seeded():
    assert segment_map_standard_error(perfect(GROUND_TRUTH), GROUND_TRUTH) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    ground_truth = [np.array([[0.1, 0.3, v % 3], [0.5, 0.8, (v + 1) % 3]]) for v in range(12)]
    # Half of the videos get their segments right, the others miss them.
    detections = [
        np.c_[g[:, :2] + (0.0 if v % 2 else 0.5), g[:, 2], rng.random(2)]
        for v, g in enumerate(ground_truth)
    ]
    se = segment_map_standard_error(detections, ground_truth, seed=1)
    assert 0.0 < se < 30.0
    assert segment_map_standard_error(detections, ground_truth, seed=1) == se


def test_frame_auc_by_hand():
    # Positive-negative pairs ranked right: 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4; wrong: 0.35 < 0.4.
    assert frame_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(75)
    # A tie between a positive and a negative counts one half.
    assert frame_auc(np.array([0.5, 0.5, 0.9]), np.array([0, 1, 1])) == pytest.approx(75)


def test_a_perfect_frame_score_is_100_a_reversed_one_0_and_one_class_is_an_error():
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0])
    assert frame_auc(labels.astype(float), labels) == pytest.approx(100)
    assert frame_auc(-labels.astype(float), labels) == pytest.approx(0)
    with pytest.raises(ValueError, match="normal and anomalous frames"):
        frame_auc(np.arange(4.0), np.zeros(4))
    with pytest.raises(ValueError, match="4 scores but 3 labels"):
        frame_auc(np.arange(4.0), np.array([0, 1, 1]))


def test_segment_scores_spread_over_their_frames_and_ranges_become_frame_labels():
    # 2 segments of 3 frames; one anomaly over frames [2, 5), one padding row.
    scores, labels = frames_of_video(
        np.array([0.2, 0.9]), np.array([[2 / 6, 5 / 6], [-1, -1]]), num_frames=6
    )
    np.testing.assert_allclose(scores, [0.2, 0.2, 0.2, 0.9, 0.9, 0.9])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, 0])
    # 5 frames over 2 segments: frame 2 (time [0.4, 0.6)) starts in segment 0.
    scores, _ = frames_of_video(np.array([0.0, 1.0]), -np.ones((4, 2)), num_frames=5)
    np.testing.assert_allclose(scores, [0, 0, 0, 1, 1])


def test_float32_ranges_give_back_the_manifest_frames():
    anomalies = np.array([[71 / 160, 101 / 160]], dtype=np.float32)
    _, labels = frames_of_video(np.zeros(10), anomalies, num_frames=160)
    np.testing.assert_array_equal(np.nonzero(labels)[0], np.arange(71, 101))


def test_frame_auc_equals_sklearns_roc_auc_with_and_without_ties():
    rng = np.random.default_rng(0)
    for case in range(200):
        n = int(rng.integers(2, 400))
        labels = rng.integers(0, 2, n)
        labels[rng.choice(n, 2, replace=False)] = (0, 1)  # both kinds present
        # Few distinct values make ties common; continuous values make them rare.
        scores = rng.integers(0, 5, n).astype(float) if case % 2 else rng.normal(size=n)
        expected = 100 * roc_auc_score(labels, scores)
        assert frame_auc(scores, labels) == pytest.approx(expected, abs=1e-9), case
    with pytest.raises(ValueError, match="finite"):
        frame_auc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))


def test_video_frame_auc_equals_sklearn_on_the_frames_expanded_by_hand():
    rng = np.random.default_rng(0)
    segment_scores = rng.random((3, 10))  # 3 videos of 10 segments of 16 frames
    anomalies = -np.ones((3, 4, 2))
    anomalies[0, 0] = [71 / 160, 101 / 160]
    anomalies[2, 0] = [0 / 160, 20 / 160]
    frame_labels = np.zeros((3, 160), dtype=int)
    frame_labels[0, 71:101] = 1
    frame_labels[2, 0:20] = 1
    expected = 100 * roc_auc_score(
        frame_labels.ravel(), np.repeat(segment_scores, 16, axis=1).ravel()
    )
    got = video_frame_auc(segment_scores, anomalies, np.full(3, 160))
    assert got == pytest.approx(expected)


def test_the_bootstrap_standard_error_is_seeded_and_matches_the_spread_over_fresh_videos():
    def videos(n, seed):
        rng = np.random.default_rng(seed)
        anomalous = np.arange(n) % 2 == 1
        anomalies = -np.ones((n, 4, 2))
        anomalies[anomalous, 0] = [0.3, 0.5]  # segments 3 and 4 of 10
        scores = rng.normal(size=(n, 10))
        scores[anomalous, 3:5] += 1.0  # an imperfect detector
        return scores, anomalies, np.full(n, 20)

    se = frame_auc_standard_error(*videos(40, 0), resamples=100, seed=1)
    assert se == frame_auc_standard_error(*videos(40, 0), resamples=100, seed=1)
    assert se != frame_auc_standard_error(*videos(40, 0), resamples=100, seed=2)
    # What it estimates: how much the AUC varies from one draw of 40 videos to the next.
    estimates = [frame_auc_standard_error(*videos(40, s), resamples=100) for s in range(3)]
    spread = np.std([video_frame_auc(*videos(40, s)) for s in range(100, 160)], ddof=1)
    assert 0.6 < np.mean(estimates) / spread < 1.6
    # A perfect detector has AUC 100 in every resample.
    scores, anomalies, num_frames = videos(20, 0)
    perfect = np.zeros_like(scores)
    perfect[1::2, 3:5] = 1
    assert frame_auc_standard_error(perfect, anomalies, num_frames) == 0


def test_paired_accuracy_standard_error_by_hand():
    # Differences per example 0, 1, 0, 0: standard deviation 0.5 (ddof 1), over sqrt(4) -> 0.25.
    correct, baseline = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])
    assert paired_accuracy_standard_error(correct, baseline) == pytest.approx(25.0)
    assert paired_accuracy_standard_error(correct, correct) == 0.0
    with pytest.raises(ValueError, match="two \\(N,\\) arrays"):
        paired_accuracy_standard_error(correct, baseline[:3])


def test_a_change_measured_on_the_same_videos_is_known_better_than_either_metric():
    # 40 videos of very different difficulty, two detectors that differ on a few of them: the
    # difficulty moves both metrics together, so their difference varies far less.
    rng = np.random.default_rng(0)
    n = 40
    anomalies = -np.ones((n, 4, 2))
    anomalies[1::2, 0] = [0.3, 0.5]
    difficulty = rng.uniform(0.0, 3.0, n)[:, None]
    scores = rng.normal(size=(n, 10)) * difficulty
    scores[1::2, 3:5] += 1.0
    other = scores.copy()
    other[:4] += rng.normal(size=(4, 10)) * 0.3
    frames = np.full(n, 20)
    alone = frame_auc_standard_error(scores, anomalies, frames, resamples=100)
    paired = frame_auc_standard_error(other, anomalies, frames, resamples=100, baseline=scores)
    assert 0.0 < paired < alone / 3
    assert frame_auc_standard_error(scores, anomalies, frames, baseline=scores) == 0.0

    ground_truth = [np.array([[0.1, 0.3, v % 3], [0.5, 0.8, (v + 1) % 3]]) for v in range(24)]
    detections = [
        np.c_[g[:, :2] + (0.0 if v % 2 else 0.5), g[:, 2], rng.random(2)]
        for v, g in enumerate(ground_truth)
    ]
    moved = [d.copy() for d in detections]
    moved[1][:, :2] += 0.5  # one video's hits become misses
    alone = segment_map_standard_error(detections, ground_truth, seed=1)
    paired = segment_map_standard_error(moved, ground_truth, seed=1, baseline=detections)
    assert 0.0 < paired < alone
    assert segment_map_standard_error(detections, ground_truth, baseline=detections) == 0.0
