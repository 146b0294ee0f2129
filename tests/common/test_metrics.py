"""Tests for AP/cMAP, chance cMAP, top-1 accuracy and the frame AUC of anomaly detection."""

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
