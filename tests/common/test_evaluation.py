"""Tests for the central evaluation: deployment-style anonymization, the privacy protocols on
video and stills, and the linear AR probe (generated features)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from common.aam import AnonymizingAdapter
from common.config import load_config
from common.evaluation import (
    CentralEvaluator,
    Evaluation,
    EvaluationError,
    EvaluationSet,
    Split,
    TaskVideos,
    VideoSplit,
    anonymize_sequences,
)
from common.metrics import paired_accuracy_standard_error
from common.probes import run_linear_probe
from tests.fakes import without_timings


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


# ---------------------------------------------------------------------------------------------
# Deployment-style anonymization


def trained_like_adapter(dim: int = 8) -> AnonymizingAdapter:
    torch.manual_seed(0)
    adapter = AnonymizingAdapter(dim, layers=2, heads=2)
    for p in adapter.parameters():  # leave identity: every branch does something
        nn.init.normal_(p, std=0.2)
    return adapter


def test_sequences_are_anonymized_window_by_window_as_a_deployment_does():
    adapter = trained_like_adapter()
    clips = np.random.default_rng(0).normal(size=(5, 7, 8)).astype(np.float32)
    out = anonymize_sequences(adapter, clips, window=3)
    with torch.no_grad():
        x = torch.from_numpy(clips)
        expected = torch.cat([adapter(x[:, 0:3]), adapter(x[:, 3:6]), adapter(x[:, 6:7])], dim=1)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)
    # Attention works inside a window: with window 1 the answer differs.
    assert not np.allclose(anonymize_sequences(adapter, clips, window=1), out, atol=1e-4)
    # A video's features do not depend on the other videos processed with it.
    alone = anonymize_sequences(adapter, clips[2:3], window=3)
    np.testing.assert_allclose(alone[0], out[2], atol=1e-5)
    # No adapter: the raw features (the baseline).
    assert anonymize_sequences(None, clips, window=3) is clips


# ---------------------------------------------------------------------------------------------
# The central evaluator on a planted evaluation set

A, D = 3, 8


def planted_set(seed: int = 0) -> EvaluationSet:
    """Attributes written into the first A feature dimensions of every clip and still; the
    action into the next dimensions; noise elsewhere."""
    rng = np.random.default_rng(seed)

    def attributes(n):
        y = (rng.random((n, A)) < 0.4).astype(np.float32)
        y[0] = 1
        return y

    def stills(n):
        y = attributes(n)
        x = rng.normal(size=(n, D)).astype(np.float32)
        x[:, :A] += 3 * y
        return Split(x, y)

    def videos(n):
        y, actions = attributes(n), rng.integers(0, 4, n)
        clips = rng.normal(size=(n, 2, D)).astype(np.float32)
        clips[:, :, :A] += 3 * y[:, None]
        clips[:, :, A : A + 4] += 3 * np.eye(4)[actions][:, None]
        return VideoSplit(clips, {"action": actions}, y)

    sizes = (("train", 160), ("val", 80), ("test", 100))
    return EvaluationSet(
        "planted",
        tuple(f"a{i}" for i in range(A)),
        {s: stills(n) for s, n in sizes},
        {"ar": TaskVideos(tuple(f"c{i}" for i in range(4)), {s: videos(n) for s, n in sizes})},
    )


FAST = [
    "evaluation.attacker_epochs=40",
    "evaluation.attacker_patience=8",
    "evaluation.probe_epochs=60",
    "evaluation.batch_size=32",
    "evaluation.attackers=mlp,logistic,knn,inversion",
]


class DropAttributes(nn.Module):
    """An 'adapter' that zeroes the attribute dimensions: the information is gone."""

    def forward(self, x, key_padding_mask=None):
        x = x.clone()
        x[..., :A] = 0
        return x


class Scramble(nn.Module):
    """An invertible mixing: the information is all still there."""

    def __init__(self):
        super().__init__()
        self.mixing = torch.from_numpy(np.random.default_rng(1).normal(size=(D, D))).float()

    def forward(self, x, key_padding_mask=None):
        return 10 * x @ self.mixing


def test_the_privacy_number_is_the_worst_attacker_on_video_and_stills_are_reported_beside():
    config = load_config(None, FAST)
    result = CentralEvaluator(planted_set(), config).evaluate(None).to_json()
    video = result["privacy_attackers"]["video"]
    stills = result["privacy_attackers"]["stills"]
    assert set(video) == set(stills) == {"mlp", "logistic", "knn", "inversion"}
    assert result["privacy_cmap"] == max(r["test_cmap"] for r in video.values())
    assert result["privacy_val_cmap"] == max(r["val_cmap"] for r in video.values())
    assert result["privacy_stills_cmap"] == max(r["test_cmap"] for r in stills.values())
    assert result["privacy_stills_paper_cmap"] == stills["mlp"]["test_cmap"]
    assert result["privacy_cmap"] > 95 and result["ar_top1"] > 95
    assert set(result["privacy_per_attribute_ap"]) == {"a0", "a1", "a2"}


def test_stills_left_out_then_added_equal_an_evaluation_that_ran_them():
    config = load_config(None, FAST)
    evaluator = CentralEvaluator(planted_set(), config)
    evaluator.evaluate(None)
    full = evaluator.evaluate(Scramble())
    lean = evaluator.evaluate(Scramble(), stills=False)
    assert lean.privacy.stills_cmap is None and lean.privacy.stills_paper_cmap is None
    assert lean.privacy.attackers["stills"] == {}
    assert lean.privacy.cmap == full.privacy.cmap and lean.tasks == full.tasks
    assert Evaluation.from_json(lean.to_json()) == lean  # the checkpoint keeps the gap
    added = evaluator.with_stills(lean, Scramble())
    assert without_timings(added) == without_timings(full)
    assert evaluator.with_stills(full, None) is full  # nothing to add: nothing runs


def test_removing_the_information_brings_every_attacker_to_chance_and_mixing_it_does_not():
    config = load_config(None, FAST)
    evaluator = CentralEvaluator(planted_set(), config)
    dropped = evaluator.evaluate(DropAttributes()).to_json()
    assert dropped["privacy_cmap"] < dropped["privacy_chance_cmap"] + 15
    assert dropped["ar_top1"] > 95
    mixed = evaluator.evaluate(Scramble()).to_json()
    assert mixed["privacy_cmap"] > 95


def test_after_the_raw_features_each_task_score_carries_its_paired_change_error():
    config = load_config(None, FAST)
    es = planted_set()
    evaluator = CentralEvaluator(es, config)
    raw = evaluator.evaluate(None)
    assert raw.tasks["ar"].change_se is None and "ar_top1_change_se" not in raw.to_json()
    dropped = evaluator.evaluate(DropAttributes())
    actions = es.tasks["ar"].splits["test"].labels["action"]
    expected = paired_accuracy_standard_error(
        dropped.tasks["ar"].test_outputs == actions, raw.tasks["ar"].test_outputs == actions
    )
    assert dropped.tasks["ar"].change_se == expected
    assert dropped.to_json()["ar_top1_change_se"] == expected
    # and it survives the checkpoint's JSON (the outputs, which pair the scores, do not)
    assert Evaluation.from_json(dropped.to_json()).tasks["ar"].change_se == expected


def test_an_evaluation_set_of_an_older_version_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "evaluation_set.npz"
    planted_set().save(path)
    loaded = EvaluationSet.load(path)
    planted = planted_set().tasks["ar"]
    assert loaded.tasks["ar"].classes == planted.classes
    for split in ("train", "val", "test"):
        got, want = loaded.tasks["ar"].splits[split], planted.splits[split]
        np.testing.assert_array_equal(got.clips, want.clips)
        np.testing.assert_array_equal(got.attributes, want.attributes)
        np.testing.assert_array_equal(got.labels["action"], want.labels["action"])
    old = tmp_path / "old.npz"
    meta = np.frombuffer(b'{"encoder_id": "x", "attributes": [], "actions": []}', np.uint8)
    np.savez(old, meta=meta, **{"privacy/train/features": np.zeros((2, 3))})
    with pytest.raises(EvaluationError, match="latentveil prepare"):
        EvaluationSet.load(old)


def test_an_evaluation_round_trips_through_its_json():
    config = load_config(None, FAST)
    result = CentralEvaluator(planted_set(), config).evaluate(None)
    again = Evaluation.from_json(result.to_json())
    assert again == result
    assert set(again.tasks) == {"ar"}
    assert result.to_json()["ar_val_top1"] == result.tasks["ar"].val
    assert "ar_top1_by_kind" not in result.to_json()  # nothing to break down
    kinds = {"ar": replace(result.tasks["ar"], by_kind={"walk": 90.0, "wave": 80.0})}
    broken_down = replace(result, tasks=kinds)
    assert broken_down.to_json()["ar_top1_by_kind"] == {"walk": 90.0, "wave": 80.0}
    assert Evaluation.from_json(broken_down.to_json()) == broken_down


def test_evaluating_a_task_the_set_has_no_videos_of_is_a_clear_error():
    config = load_config(None, FAST)
    empty = EvaluationSet("planted", planted_set().attributes, planted_set().stills, {})
    with pytest.raises(EvaluationError, match="tasks.evaluated names ar"):
        CentralEvaluator(empty, config)
