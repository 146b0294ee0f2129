"""Tests for the attacker and linear-probe protocols on generated features."""

import numpy as np
import pytest

from common.evaluation import Split, run_attacker, run_linear_probe


def attribute_data(n: int, d: int, signal: float, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < 0.3).astype(np.float32)
    directions = np.random.default_rng(99).normal(size=(4, d))
    features = rng.normal(size=(n, d)) + signal * labels @ directions
    return Split(features.astype(np.float32), labels)


def test_attacker_reads_linearly_encoded_attributes_and_not_noise():
    leaky = [attribute_data(n, 16, 2.0, seed) for n, seed in ((400, 0), (200, 1), (300, 2))]
    clean = [attribute_data(n, 16, 0.0, seed) for n, seed in ((400, 0), (200, 1), (300, 2))]
    leaky_result = run_attacker(*leaky, epochs=15, batch_size=32)
    clean_result = run_attacker(*clean, epochs=15, batch_size=32)
    assert leaky_result.test_cmap > 90
    assert clean_result.test_cmap < clean_result.chance_cmap + 10
    assert 20 < leaky_result.chance_cmap < 40
    assert len(leaky_result.per_attribute_ap) == 4


def test_attacker_selection_never_looks_at_test_labels():
    train, val, test = (
        attribute_data(n, 16, 1.0, seed) for n, seed in ((300, 0), (200, 1), (200, 2))
    )
    shuffled = Split(test.features, np.random.default_rng(5).permutation(test.labels))
    a = run_attacker(train, val, test, epochs=10)
    b = run_attacker(train, val, shuffled, epochs=10)
    assert (a.best_epoch, a.val_cmap) == (b.best_epoch, b.val_cmap)
    assert a.test_cmap != b.test_cmap


def action_data(n: int, seed: int, signal: float = 1.5) -> Split:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    centroids = np.random.default_rng(7).normal(size=(5, 12))
    features = signal * centroids[labels][:, None, :] + rng.normal(size=(n, 3, 12))
    return Split(features.astype(np.float32), labels)


def test_linear_probe_learns_actions_and_reports_standard_error():
    result = run_linear_probe(
        action_data(300, 0), action_data(100, 1), action_data(400, 2), 5, epochs=20, batch_size=32
    )
    assert result.test_top1 > 90
    assert result.num_test == 400
    assert result.test_top1_se == pytest.approx(
        100 * np.sqrt(result.test_top1 / 100 * (1 - result.test_top1 / 100) / 400)
    )
    noise = run_linear_probe(
        action_data(300, 0, 0.0),
        action_data(100, 1, 0.0),
        action_data(400, 2, 0.0),
        5,
        epochs=20,
        batch_size=32,
    )
    assert noise.test_top1 < 35
