"""Tests for the privacy attacker suite on planted data (common.attackers)."""

import numpy as np
import pytest

from common.attackers import (
    ATTACKERS,
    AttackData,
    AttackError,
    AttackResult,
    Split,
    SuiteSettings,
    reconstruction_r2,
    run_attack_suite,
    run_attacker,
    run_attacker_on,
    worst_case,
)
from common.config import ATTACKER_NAMES, ConfigError, load_config
from tests.paths import CONFIG_DIR

FAST = SuiteSettings(max_epochs=60, patience=10, batch_size=64)
SIZES = (("train", 300, 0), ("val", 150, 1), ("test", 200, 2))
A, D = 4, 12


def labels(n: int, seed: int) -> np.ndarray:
    y = (np.random.default_rng(seed).random((n, A)) < 0.3).astype(np.float32)
    y[0] = 1  # every attribute has a positive
    return y


def raw_features(y: np.ndarray, seed: int, signal: float = 2.0) -> np.ndarray:
    """Attributes linearly mixed into Gaussian noise (what an encoder's features look like)."""
    directions = np.random.default_rng(99).normal(size=(A, D))
    rng = np.random.default_rng(100 + seed)
    return (rng.normal(size=(len(y), D)) + signal * y @ directions).astype(np.float32)


def dataset(transform=lambda x: x, signal: float = 2.0) -> AttackData:
    splits, raws = [], []
    for _, n, seed in SIZES:
        y = labels(n, seed)
        raw = raw_features(y, seed, signal)
        splits.append(Split(transform(raw).astype(np.float32), y))
        raws.append(raw)
    return AttackData(*splits, raw_train=raws[0], raw_val=raws[1], raw_test=raws[2])


def test_the_suite_is_the_configured_default_and_every_attacker_is_registered():
    assert set(ATTACKER_NAMES) == set(ATTACKERS.names())
    # The shipped default run attacks with the whole suite.
    default = load_config(CONFIG_DIR / "default.yaml")
    assert set(default.evaluation.attackers) == set(ATTACKERS.names())
    with pytest.raises(ConfigError, match="evaluation.attackers"):
        load_config(None, ["evaluation.attackers=mlp,oracle"])


@pytest.mark.parametrize("name", ATTACKER_NAMES)
def test_a_feature_that_is_the_attributes_scores_about_100(name):
    # The attributes themselves, as features, beside noise dimensions.
    splits = []
    raws = []
    for _, n, seed in SIZES:
        y = labels(n, seed)
        noise = np.random.default_rng(seed + 7).normal(size=(n, D - A))
        x = np.concatenate([3.0 * y, noise], axis=1).astype(np.float32)
        splits.append(Split(x, y))
        raws.append(x)
    data = AttackData(*splits, raw_train=raws[0], raw_val=raws[1], raw_test=raws[2])
    result = run_attacker(name, data, FAST)
    assert result.test_cmap > 97, (name, result.test_cmap)


@pytest.mark.parametrize("name", ATTACKER_NAMES)
def test_random_features_score_about_chance(name):
    def noise(raw):
        return np.random.default_rng(len(raw)).normal(size=raw.shape)

    result = run_attacker(name, dataset(noise), FAST)
    assert result.test_cmap < result.chance_cmap + 12, (name, result.test_cmap)


@pytest.mark.parametrize("name", ATTACKER_NAMES)
def test_a_scaled_copy_of_raw_features_scores_like_raw_features(name):
    raw = run_attacker(name, dataset(), FAST)
    # Every sample's norm inflated by its own factor (1x to 300x), as a defence by scale would.
    factors = {n: np.random.default_rng(n).uniform(1, 300, size=(n, 1)) for _, n, _ in SIZES}
    scaled = run_attacker(name, dataset(lambda x: x * factors[len(x)]), FAST)
    assert raw.test_cmap > 80
    assert scaled.test_cmap > raw.test_cmap - 4, (name, raw.test_cmap, scaled.test_cmap)


def test_boosted_trees_read_a_direction_through_each_samples_own_scale():
    # Each attribute is whether its angle is past 45 degrees: sin > cos, a diagonal that single
    # splits of the features as they are can only approximate, however many, while each
    # sample's scale (1x to 300x) moves both. Scaled to unit norm, one split on the cosine
    # reads it exactly, and val tells the attacker so.
    def angles(n: int, seed: int) -> Split:
        rng = np.random.default_rng(seed)
        theta = rng.uniform(0, np.pi / 2, size=(n, A))
        scale = np.exp(rng.uniform(0, np.log(300), size=(n, 1)))
        noise = 0.05 * rng.normal(size=(n, D - 2 * A))
        x = scale * np.concatenate([np.cos(theta), np.sin(theta), noise], axis=1)
        return Split(x.astype(np.float32), (theta > np.pi / 4).astype(np.float32))

    result = run_attacker("boosted_trees", AttackData(*(angles(n, s) for _, n, s in SIZES)), FAST)
    assert {c["normalisation"] for c in result.chosen.values()} == {"l2"}
    assert result.test_cmap > 99.9  # as it is, 98.65


def test_boosted_trees_ignore_a_global_rescaling():
    raw = run_attacker("boosted_trees", dataset(), FAST)
    scaled = run_attacker("boosted_trees", dataset(lambda x: 50.0 * x - 3.0), FAST)
    assert scaled.test_cmap == pytest.approx(raw.test_cmap, abs=0.5)


def test_inversion_recovers_a_random_invertible_linear_map():
    mixing = np.random.default_rng(3).normal(size=(D, D))
    assert abs(np.linalg.det(mixing)) > 1e-3
    # The adapter as a random invertible linear map: every coordinate mixes all raw ones.
    data = dataset(lambda x: x @ mixing)
    result = run_attacker("inversion", data, FAST)
    raw = run_attacker("logistic", dataset(), FAST)
    assert result.chosen["r2"] > 0.99
    assert result.chosen["r2_attribute_directions"] > 0.99
    assert result.test_cmap == pytest.approx(raw.test_cmap, abs=2.0)


def test_on_the_raw_features_themselves_the_inversion_is_the_identity_and_reads_like_raw():
    raw = dataset()  # the released features are the raw ones
    result = run_attacker("inversion", raw, FAST)
    assert result.chosen["inverse"] == "identity"
    assert result.chosen["r2"] == pytest.approx(1.0)
    # exactly the raw-feature logistic reader (same fit, same seed) on the raw features
    assert result.test_cmap == run_attacker("logistic", raw, FAST).test_cmap
    # features that merely resemble the raw ones are inverted by a fitted map
    nudged = dataset(lambda x: x + 1e-3)
    assert run_attacker("inversion", nudged, FAST).chosen["inverse"] in ("ridge", "mlp")


def test_reconstruction_r2_is_one_for_a_perfect_inverse_and_zero_for_the_mean():
    raw = np.random.default_rng(0).normal(size=(100, 6))
    assert reconstruction_r2(raw, raw, raw)["r2"] == pytest.approx(1.0)
    mean = np.tile(raw.mean(0), (100, 1))
    assert reconstruction_r2(mean, raw, raw)["r2"] == pytest.approx(0.0, abs=1e-9)


def test_the_inversion_attacker_needs_the_raw_features_it_can_make():
    data = dataset()
    bare = AttackData(data.train, data.val, data.test)
    with pytest.raises(AttackError, match="raw features"):
        run_attacker("inversion", bare, FAST)


def test_attackers_never_look_at_test_labels():
    data = dataset()
    shuffled = Split(data.test.features, np.random.default_rng(5).permutation(data.test.labels))
    other = AttackData(data.train, data.val, shuffled, data.raw_train, data.raw_val)
    for name in ("mlp", "logistic", "knn"):
        a, b = run_attacker(name, data, FAST), run_attacker(name, other, FAST)
        assert (a.val_cmap, a.chosen) == (b.val_cmap, b.chosen)
        assert a.test_cmap != b.test_cmap


@pytest.mark.parametrize("name", ["mlp", "inversion"])
def test_an_attacker_fitted_once_scores_several_test_sets_as_if_each_were_its_test(name):
    # task-privacy scores one fitted attacker on each task's test videos: the same numbers as
    # fitting it with that test set, and a test set of pure noise scores about chance.
    data = dataset(lambda x: x @ np.random.default_rng(3).normal(size=(D, D)))
    half = Split(data.test.features[:100], data.test.labels[:100])
    noise = Split(np.random.default_rng(4).normal(size=(200, D)).astype(np.float32),
                  data.test.labels)  # fmt: skip
    results = run_attacker_on(name, data, {"all": data.test, "half": half, "noise": noise}, FAST)
    alone = run_attacker(name, AttackData(data.train, data.val, half, data.raw_train,
                                          data.raw_val, data.raw_test[:100]), FAST)  # fmt: skip
    assert results["half"].test_cmap == pytest.approx(alone.test_cmap, abs=1e-9)
    assert results["half"].val_cmap == results["all"].val_cmap == alone.val_cmap
    assert results["all"].test_cmap > 80 > results["noise"].test_cmap
    assert abs(results["noise"].test_cmap - results["noise"].chance_cmap) < 15


def test_the_mlp_trains_until_validation_stops_improving():
    result = run_attacker("mlp", dataset(signal=0.7), SuiteSettings(max_epochs=500, patience=10))
    chosen = result.chosen
    # It stopped on its own, `patience` epochs after its best one, well before the cap.
    assert chosen["epochs_run"] == chosen["best_epoch"] + 11
    assert chosen["epochs_run"] < 500


def test_worst_case_is_the_highest_test_cmap_and_selection_reads_val_only():
    def result(name, test, val):
        return AttackResult(name, test, val, 30.0, [test] * A)

    results = {r.attacker: r for r in (result("a", 60, 70), result("b", 80, 65))}
    worst = worst_case(results)
    assert (worst["cmap"], worst["attacker"]) == (80, "b")
    assert (worst["val_cmap"], worst["val_attacker"]) == (70, "a")
    with pytest.raises(AttackError):
        worst_case({})


def test_the_suite_runs_every_named_attacker_on_the_same_data():
    results = run_attack_suite(dataset(), ("logistic", "knn"), FAST)
    assert list(results) == ["logistic", "knn"]
    assert all(r.test_cmap > 80 for r in results.values())


def test_attack_data_with_mismatched_shapes_is_a_clear_error():
    data = dataset()
    with pytest.raises(AttackError, match="same N"):
        AttackData(Split(data.train.features[:5], data.train.labels), data.val, data.test)


@pytest.mark.parametrize("name", ATTACKER_NAMES)
def test_every_attacker_runs_on_a_train_split_smaller_than_its_defaults(name):
    # The tiny world's central splits have 8 / 4 / 8 items: fewer than kNN's largest k.
    y = labels(8, 0)
    raw = raw_features(y, 0)
    split = Split(raw, y)
    data = AttackData(split, split, split, raw_train=raw, raw_val=raw, raw_test=raw)
    result = run_attacker(name, data, FAST)
    # Tested on the items it trained on, no attacker does worse than a constant score (which
    # is what boosted trees give: their leaves need more items than 8).
    assert result.test_cmap >= result.chance_cmap - 1e-9, (name, result.test_cmap)


@pytest.mark.parametrize(("n", "k"), [(8, 5), (3, 3)])
def test_knn_tries_only_the_k_a_small_train_split_allows(n, k):
    # Of kNN's k (5, 15, 45) only 5 fits 8 train items; with 3 items it uses all 3.
    y = labels(n, 0)
    raw = raw_features(y, 0)
    split = Split(raw, y)
    result = run_attacker("knn", AttackData(split, split, split), FAST)
    assert {choice["k"] for choice in result.chosen.values()} == {k}
