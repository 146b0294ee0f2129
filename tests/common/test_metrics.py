"""Tests for AP/cMAP, chance cMAP and top-1 accuracy."""

import math

import numpy as np
import pytest

from common.metrics import (
    accuracy_standard_error,
    average_precision,
    chance_cmap,
    class_mean_average_precision,
    top1_accuracy,
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
