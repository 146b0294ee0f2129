"""The closed-form anonymizer: moments that add across sites, Fisher's discriminant as
scikit-learn fits it, and an adapter that keeps the classes and drops what varies within them."""

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from common.aam import AnonymizingAdapter
from common.config import HeadsConfig, RunConfig, TasksConfig
from common.discriminant import (
    ClassMoments,
    DiscriminantError,
    fit_discriminant,
    moments_arrays,
    moments_from_arrays,
    moments_template,
    trained_moments,
    with_discriminant,
)
from common.sitedata import TaskArrays
from common.tasks import get_task

D, C = 24, 4


def clips_with_a_private_attribute(n: int, seed: int):
    """(n, 2, D) clip sequences: the class moves a video along 3 directions; a binary private
    attribute moves it, much further, along another (as an actor's looks do); noise on all."""
    world = np.random.default_rng(100)  # the same classes and attribute in every sample
    class_dirs = world.normal(size=(C, D)) * 1.5
    private_dir = world.normal(size=D)
    private_dir *= 6.0 / np.linalg.norm(private_dir)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=n)
    private = rng.integers(0, 2, size=n)
    centre = class_dirs[labels] + private[:, None] * private_dir  # (n, D)
    clips = centre[:, None, :] + rng.normal(size=(n, 2, D))
    return clips, labels, private


def projection_of(vectors: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(vectors)
    return q @ q.T


def test_moments_of_sites_add_up_to_the_moments_of_their_pooled_clips():
    clips, labels, _ = clips_with_a_private_attribute(90, 0)
    parts = [ClassMoments.of_clips(clips[s], labels[s], C) for s in (slice(0, 30), slice(30, 90))]
    pooled = ClassMoments.of_clips(clips, labels, C)
    summed = parts[0] + parts[1]
    for name in ("counts", "sums", "second"):
        np.testing.assert_allclose(getattr(summed, name), getattr(pooled, name), rtol=1e-12)
    assert summed.counts.sum() == 180  # every clip counts with its video's class
    a = fit_discriminant(summed, C - 1, 0.01)
    b = fit_discriminant(pooled, C - 1, 0.01)
    np.testing.assert_allclose(a.basis() @ a.basis().T, b.basis() @ b.basis().T, atol=1e-9)


def tad_videos(clips: np.ndarray) -> TaskArrays:
    """Two TAD videos of 8 clips (clip k's centre at (k + 0.5) / 8 of the video): video 0 has
    action 3 over [0.25, 0.5) and action 1 over [0.5, 0.75); video 1 has action 2 over [0, 0.5)
    overlapping action 0 over [0.25, 0.75); a padding row of -1 in each."""
    segments = np.array(
        [
            [[0.25, 0.5, 3], [0.5, 0.75, 1], [-1, -1, -1]],
            [[0.0, 0.5, 2], [0.25, 0.75, 0], [-1, -1, -1]],
        ],
        dtype=np.float32,
    )
    return TaskArrays(["t0", "t1"], clips, clips[:, :0], {"segments": segments})


def test_each_task_gives_the_clips_that_show_one_action_under_that_action():
    rng = np.random.default_rng(7)
    tad = tad_videos(rng.normal(size=(2, 8, D)))
    x, y = get_task("tad").action_clips(tad.clip_features, tad.labels)
    # video 0: clips 2-3 (action 3), 4-5 (action 1); video 1: clips 0-1 (action 2), clips 2-3
    # in both segments (left out), 4-5 (action 0); clips 0-1 and 6-7 of video 0 and 6-7 of
    # video 1 are background (left out)
    kept = [(0, 2), (0, 3), (0, 4), (0, 5), (1, 0), (1, 1), (1, 4), (1, 5)]
    np.testing.assert_array_equal(x, np.stack([tad.clip_features[v, c] for v, c in kept]))
    np.testing.assert_array_equal(y, [3, 3, 1, 1, 2, 2, 0, 0])
    clips, labels, _ = clips_with_a_private_attribute(5, 0)
    x, y = get_task("ar").action_clips(clips, {"action": labels})
    np.testing.assert_array_equal(x, clips.reshape(10, D))  # every clip, its video's action
    np.testing.assert_array_equal(y, np.repeat(labels, 2))
    assert get_task("ad").action_clips(clips, {"anomalous": np.zeros(5)}) is None


def test_a_boundary_on_a_clips_centre_falls_as_the_detectors_targets_place_it():
    # 160 frames in 10 clips of 16: segments from frame 24 to 56 and from 88 to 136 start on
    # the centres of clips 1 and 5 (inside: start <= centre) and end on those of clips 3 and 8
    # (outside: centre < end), as common.tasks.temporal_detection.assign_targets places them
    frames, num_clips = 160, 10
    segments = np.array(
        [[[24 / frames, 56 / frames, 3], [88 / frames, 136 / frames, 1]]], dtype=np.float32
    )
    clips = np.arange(num_clips, dtype=np.float32)[None, :, None] * np.ones(D, np.float32)
    x, y = get_task("tad").action_clips(clips, {"segments": segments})
    np.testing.assert_array_equal(x[:, 0], [1, 2, 5, 6, 7])
    np.testing.assert_array_equal(y, [3, 3, 1, 1, 1])


def test_a_sites_moments_sum_its_trained_tasks_action_clips_and_nothing_else():
    rng = np.random.default_rng(8)
    clips, labels, _ = clips_with_a_private_attribute(6, 0)
    ar = TaskArrays([str(i) for i in range(6)], clips, clips[:, :0], {"action": labels})
    tad = tad_videos(rng.normal(size=(2, 8, D)))
    ad = TaskArrays(["a0"], rng.normal(size=(1, 8, D)), clips[:1, :0], {"anomalous": np.ones(1)})
    data = {"ar": ar, "tad": tad, "ad": ad}
    of_ar = ClassMoments.of_clips(clips, labels, C)
    x, y = get_task("tad").action_clips(tad.clip_features, tad.labels)
    of_tad = ClassMoments.of_labelled(x, y, C)

    def config(seen):
        tasks = TasksConfig(seen=seen, evaluated={"ar": 2.0})
        return RunConfig(tasks=tasks, heads=HeadsConfig(num_actions=C))

    for seen, expected in (
        ({"ar": 1.0, "tad": 1.0, "ad": 0.25}, of_ar + of_tad),  # AD names no action
        ({"ar": 1.0, "tad": 0.0, "ad": 0.0}, of_ar),  # TAD's footage in L_LC, not its labels
        ({"tad": 1.0}, of_tad),
    ):
        got = trained_moments(config(seen), data)
        assert got.counts.sum() == expected.counts.sum()
        for name in ("counts", "sums", "second"):
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-12)
    assert trained_moments(config({"ad": 1.0}), data) is None
    assert trained_moments(config({"ar": 1.0}), {"ad": ad}) is None


def test_the_directions_span_what_scikit_learns_discriminant_finds():
    clips, labels, _ = clips_with_a_private_attribute(200, 1)
    x, y = clips.reshape(-1, D), np.repeat(labels, 2)
    fit = fit_discriminant(ClassMoments.of_clips(clips, labels, C), C - 1, 0.0)
    reference = LinearDiscriminantAnalysis(solver="eigen").fit(x, y)
    np.testing.assert_allclose(
        projection_of(fit.directions), projection_of(reference.scalings_[:, : C - 1]), atol=1e-8
    )
    np.testing.assert_allclose(fit.mean, x.mean(0), atol=1e-12)


def test_the_adapter_keeps_the_classes_and_drops_the_private_attribute():
    train, train_labels, _ = clips_with_a_private_attribute(400, 2)
    test, test_labels, test_private = clips_with_a_private_attribute(400, 3)
    fit = fit_discriminant(ClassMoments.of_clips(train, train_labels, C), C - 1, 1e-3)
    adapter = AnonymizingAdapter(D, layers=0, bottleneck=C - 1)
    adapter.load_state_dict(
        {k.removeprefix("adapter."): torch.from_numpy(v) for k, v in fit.adapter_arrays().items()}
    )
    with torch.no_grad():
        released = adapter(torch.as_tensor(test, dtype=torch.float32)).numpy()
    # z = mean + U U^T (x - mean): a projection, so applying it twice changes nothing
    with torch.no_grad():
        again = adapter(torch.as_tensor(released)).numpy()
    np.testing.assert_allclose(again, released, atol=1e-4)

    def readable(features: np.ndarray, target: np.ndarray) -> float:
        video = features.mean(1)
        half = len(video) // 2
        model = LogisticRegression(max_iter=2000).fit(video[:half], target[:half])
        return roc_auc_score(target[half:], model.predict_proba(video[half:])[:, 1])

    assert readable(test, test_private) > 0.95  # the raw clips carry it
    assert readable(released, test_private) < 0.65  # the released ones hardly
    # while the same number of directions chosen for their variance (PCA) keeps it
    pooled = train.reshape(-1, D)
    top = np.linalg.svd(pooled - pooled.mean(0), full_matrices=False)[2][: C - 1]  # (3, D)
    assert readable((test - pooled.mean(0)) @ top.T, test_private) > 0.8
    # the discriminant's own rule, as a linear head on the released clips' mean
    head = fit.head_arrays()
    logits = (
        released.mean(1) @ head["heads.ar.classifier.weight"].T + head["heads.ar.classifier.bias"]
    )
    assert (logits.argmax(1) == test_labels).mean() > 0.95


def test_what_cannot_be_fitted_is_a_clear_error():
    clips, labels, _ = clips_with_a_private_attribute(40, 4)
    moments = ClassMoments.of_clips(clips, labels, C)
    with pytest.raises(DiscriminantError, match="at most 3 discriminant directions"):
        fit_discriminant(moments, C, 0.1)
    with pytest.raises(DiscriminantError, match="shrinkage must be in"):
        fit_discriminant(moments, 2, 1.5)
    one_class = ClassMoments.of_clips(clips, np.zeros(40, dtype=int), C)
    with pytest.raises(DiscriminantError, match="fewer than 2 classes"):
        fit_discriminant(one_class, 1, 0.1)
    with pytest.raises(DiscriminantError, match="one label per video"):
        ClassMoments.of_clips(clips, labels[:-1], C)
    with pytest.raises(DiscriminantError, match="labels must lie in"):
        ClassMoments.of_clips(clips, labels + C, C)
    with pytest.raises(DiscriminantError, match="do not add"):
        moments + ClassMoments.of_clips(clips, labels, C + 1)
    # more directions than the clips can support: a singular covariance needs shrinkage
    few = ClassMoments.of_clips(clips[:6, :, :], labels[:6], C)
    with pytest.raises(DiscriminantError):
        fit_discriminant(few, 1, 0.0)


def test_a_sites_moments_are_screened_against_what_was_asked_for():
    clips, labels, _ = clips_with_a_private_attribute(40, 5)
    template = moments_template(C, D)
    good = moments_arrays(ClassMoments.of_clips(clips, labels, C))
    back = moments_from_arrays(good, template)
    np.testing.assert_array_equal(back.second, good["moments.second"])

    def refused(match: str, **changes: np.ndarray) -> None:
        arrays = {**good, **changes}
        with pytest.raises(DiscriminantError, match=match):
            moments_from_arrays({k: v for k, v in arrays.items() if v is not None}, template)

    refused("not the", **{"moments.second": None})  # a missing array
    refused("not the", **{"encoder.weight": np.zeros(3)})  # an extra one
    refused("has shape", **{"moments.sums": np.zeros((C, D + 1))})
    refused("not finite", **{"moments.sums": np.full((C, D), np.nan)})
    refused("whole numbers", **{"moments.counts": np.full(C, -1.0)})
    refused("whole numbers", **{"moments.counts": np.full(C, 0.5)})
    skewed = good["moments.second"].copy()
    skewed[0, 1] += 1.0
    refused("outer products", **{"moments.second": skewed})


def test_the_projection_goes_into_an_adapter_of_its_rank_and_nowhere_else():
    clips, labels, _ = clips_with_a_private_attribute(60, 6)
    fit = fit_discriminant(ClassMoments.of_clips(clips, labels, C), C - 1, 0.01)
    adapter = AnonymizingAdapter(D, layers=1, heads=2, ff_ratio=1.0, bottleneck=C - 1)
    arrays = {f"adapter.{k}": v.numpy() for k, v in adapter.state_dict().items()}
    arrays["heads.ar.classifier.weight"] = np.zeros((C, D), dtype=np.float32)
    arrays["heads.ar.classifier.bias"] = np.zeros(C, dtype=np.float32)
    started = with_discriminant(arrays, fit)
    changed = {k for k in arrays if not np.array_equal(arrays[k], started[k])}
    assert changed == {"adapter.bottleneck.0.weight", "adapter.bottleneck.1.weight",
                       "adapter.bottleneck.1.bias", "heads.ar.classifier.weight",
                       "heads.ar.classifier.bias"}  # fmt: skip
    # the blocks start as the identity, so the started adapter IS the projection
    adapter.load_state_dict({k.removeprefix("adapter."): torch.from_numpy(v)
                             for k, v in started.items() if k.startswith("adapter.")})  # fmt: skip
    with torch.no_grad():
        released = adapter(torch.as_tensor(clips, dtype=torch.float32)).numpy()
    u = fit.basis()
    np.testing.assert_allclose(released, fit.mean + (clips - fit.mean) @ u @ u.T, atol=1e-4)
    narrow = {**arrays, "adapter.bottleneck.0.weight": np.zeros((C - 2, D), dtype=np.float32)}
    with pytest.raises(DiscriminantError, match="must equal the directions fitted"):
        with_discriminant(narrow, fit)
