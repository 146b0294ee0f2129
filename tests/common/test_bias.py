"""The bias protocol (common.bias) on generated features: a probe that reads the group instead
of the action fails the minority group, and the gap shows it."""

import numpy as np

from common.bias import BiasResult, measure_bias
from common.config import load_config
from common.evaluation import CentralEvaluator, EvaluationSet
from common.tasks import TaskSplit
from tests.fakes import evaluation_set

GROUPS = ("masculine", "feminine")


def skewed(n: int, seed: int, balanced: bool, shared: bool) -> TaskSplit:
    """2 actions. The skewed splits show group 0 only (the extreme of the protocol's 95%
    skew); the balanced one both groups equally. The action shows in dimension 1, the same way
    for both groups (`shared`) or the other way round for group 1: a probe trained on group 0
    then reads group 1's actions backwards."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 2, n)
    groups = rng.integers(0, 2, n) if balanced else np.zeros(n, dtype=int)
    sign = np.where((groups == 1) & (not shared), -1.0, 1.0)
    clips = rng.normal(size=(n, 2, 6)).astype(np.float32)
    clips[:, :, 1] += (4.0 * sign * (2 * actions - 1))[:, None]
    return TaskSplit(clips, {"action": actions, "group": groups})


def splits(shared: bool) -> dict[str, TaskSplit]:
    return {
        "train": skewed(400, 0, False, shared),
        "val": skewed(100, 1, False, shared),
        "test": skewed(400, 2, True, shared),
    }


def test_a_group_the_probe_never_saw_shows_as_a_gap_that_closes_when_it_looks_alike():
    config = load_config(None, ["evaluation.probe_epochs=40", "evaluation.batch_size=32"])
    unfair = measure_bias(splits(shared=False), 2, GROUPS, config.evaluation)
    assert set(unfair.accuracy) == set(GROUPS)
    counts = np.bincount(splits(False)["test"].labels["group"])
    assert unfair.num_test == {"masculine": int(counts[0]), "feminine": int(counts[1])}
    assert unfair.accuracy["masculine"] > 95 and unfair.accuracy["feminine"] < 5
    assert unfair.gap == unfair.accuracy["masculine"] - unfair.accuracy["feminine"]
    fair = measure_bias(splits(shared=True), 2, GROUPS, config.evaluation)
    assert fair.gap < 5 and fair.top1 > 95
    assert BiasResult.from_json(fair.to_json()) == fair


def test_the_evaluator_reports_bias_when_the_set_has_a_bias_set():
    base = evaluation_set()
    config = load_config(None, ["evaluation.attackers=logistic", "evaluation.probe_epochs=2"])
    bias = splits(shared=True)
    from common.evaluation import TaskVideos, VideoSplit

    videos = TaskVideos(("a", "b"), {s: VideoSplit(v.clips, v.labels) for s, v in bias.items()})
    with_bias = EvaluationSet(base.encoder_id, base.attributes, base.stills, base.tasks,
                              videos, GROUPS)  # fmt: skip
    result = CentralEvaluator(with_bias, config).evaluate(None)
    assert result.bias is not None and set(result.bias.accuracy) == set(GROUPS)
    assert result.to_json()["bias"]["gap"] == result.bias.gap
    assert CentralEvaluator(base, config).evaluate(None).bias is None
    off = load_config(None, ["evaluation.attackers=logistic", "evaluation.bias=false"])
    assert CentralEvaluator(with_bias, off).evaluate(None).bias is None


def test_the_bias_set_survives_saving_the_evaluation_set(tmp_path):
    from common.evaluation import TaskVideos, VideoSplit

    base = evaluation_set()
    videos = TaskVideos(
        ("a", "b"), {s: VideoSplit(v.clips, v.labels) for s, v in splits(True).items()}
    )
    original = EvaluationSet(base.encoder_id, base.attributes, base.stills, base.tasks,
                             videos, GROUPS)  # fmt: skip
    original.save(tmp_path / "set.npz")
    loaded = EvaluationSet.load(tmp_path / "set.npz")
    assert loaded.bias_groups == GROUPS and loaded.bias.classes == ("a", "b")
    for split, data in original.bias.splits.items():
        np.testing.assert_array_equal(loaded.bias.splits[split].clips, data.clips)
        np.testing.assert_array_equal(loaded.bias.splits[split].labels["group"],
                                      data.labels["group"])  # fmt: skip
    assert EvaluationSet.load(_saved(base, tmp_path)).bias is None


def _saved(evaluation_set: EvaluationSet, folder) -> object:
    path = folder / "plain.npz"
    evaluation_set.save(path)
    return path
