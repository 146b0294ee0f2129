"""A task added as one class and one registration trains, is evaluated, selected on and
reported, with no other code naming it (the plugin contract of common.tasks)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.attackers import Split
from common.config import load_config
from common.evaluation import CentralEvaluator, EvaluationSet, TaskVideos, VideoSplit
from common.heads import SequenceClassifier
from common.model import build_model
from common.probes import run_linear_probe
from common.sitedata import TaskTensors
from common.tasks import TASKS, Task, TaskScore
from common.training import evaluate_site, train_local
from server.history import History, RoundRecord
from server.report import build_report, report_markdown
from server.selection import qualifies
from tests.fakes import D, evaluation_set, site_data


class Parity(Task):
    """A toy task: is a video's label even? (read from the manifest's `labels.number`)."""

    name = "parity"
    dataset = "parity"
    metric = "acc"
    title = "parity accuracy"

    def labels(self, entry):
        return {"even": int(entry["labels"]["number"] % 2 == 0)}

    def build_head(self, dim, config):
        return SequenceClassifier(dim, 2)

    def loss(self, head, anonymized, labels, key_padding_mask=None):
        return F.cross_entropy(head(anonymized, key_padding_mask), labels["even"])

    def site_metric(self, head, anonymized, labels):
        with torch.no_grad():
            return 100.0 * float((head(anonymized).argmax(1) == labels["even"]).float().mean())

    def evaluate(self, splits, classes, config):
        probe = run_linear_probe(
            *(Split(splits[s].clips, splits[s].labels["even"]) for s in ("train", "val", "test")),
            2, epochs=60, batch_size=16,
        )  # fmt: skip
        return TaskScore(probe.test_top1, probe.test_top1_se, probe.val_top1, probe.num_test)


@pytest.fixture
def parity(monkeypatch):
    monkeypatch.setitem(TASKS._entries, "parity", Parity())
    return TASKS.get("parity")


def parity_videos(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    even = rng.integers(0, 2, n)
    clips = rng.normal(size=(n, 2, D)).astype(np.float32)
    clips[:, :, 0] += 8 * even[:, None]
    return clips, even


def test_a_registered_task_is_configured_trained_evaluated_and_reported(parity):
    config = load_config(
        None,
        [
            "tasks.seen={ar: 1.0, parity: 0.5}",
            "tasks.evaluated={ar: 2.0, parity: 5.0}",
            "evaluation.attackers=logistic",
            "evaluation.probe_epochs=2",
            "train.batch_size=8",
        ],
    )
    # A site with videos of both tasks trains both heads; one with only AR skips parity.
    model = build_model(D, config, seed=0)
    assert set(model.heads) == {"ar", "parity"}
    clips, even = parity_videos(16, 0)
    both = site_data(1) | {
        "parity": TaskTensors(
            torch.from_numpy(clips),
            torch.from_numpy(clips.copy()),
            {"even": torch.from_numpy(even)},
        )
    }
    before = {n: p.detach().clone() for n, p in model.heads["parity"].named_parameters()}
    train_local(model, both, config, seed=0)
    assert any(not torch.equal(p, before[n]) for n, p in model.heads["parity"].named_parameters())
    assert set(evaluate_site(model, both, window=2)) == {"ar_top1", "parity_acc"}
    ar_only = build_model(D, config, seed=0)
    train_local(ar_only, site_data(1), config, seed=0)
    untouched = dict(ar_only.heads["parity"].named_parameters())
    assert all(torch.equal(untouched[n], before[n]) for n in before)

    # The central evaluation runs its protocol on its own central videos.
    base = evaluation_set()
    videos = {}
    for split, n, seed in (("train", 200, 1), ("val", 100, 2), ("test", 100, 3)):
        clips, even = parity_videos(n, seed)
        videos[split] = VideoSplit(clips, {"even": even})
    central = EvaluationSet(
        base.encoder_id, base.attributes, base.stills,
        base.tasks | {"parity": TaskVideos(("odd", "even"), videos)},
    )  # fmt: skip
    baseline = CentralEvaluator(central, config).evaluate(None)
    assert set(baseline.tasks) == {"ar", "parity"}
    assert baseline.tasks["parity"].test > 90  # the label is planted in dimension 0
    assert baseline.to_json()["parity_val_acc"] == baseline.tasks["parity"].val

    # Selection holds every evaluated task to its allowed drop.
    worse = replace(baseline.tasks["parity"], val=baseline.tasks["parity"].val - 6.0)
    dropped = replace(baseline, tasks=baseline.tasks | {"parity": worse})
    assert not qualifies(dropped, baseline, config.tasks.evaluated)
    assert qualifies(dropped, baseline, config.tasks.evaluated | {"parity": 10.0})

    # The report has a row and a rounds column for it, from its registration alone.
    history = History(baseline, [RoundRecord(0, evaluation=baseline)], selected_round=0)
    report = build_report(config, history, {"shared_params": 1,
                          "bytes_per_client_per_round": 1}, [])  # fmt: skip
    assert report["tasks"]["parity"] == {
        "metric": "parity_acc",
        "val_metric": "parity_val_acc",
        "title": "parity accuracy",
    }
    assert report["anonymized"]["parity_acc"] == baseline.tasks["parity"].test
    markdown = report_markdown(report)
    assert "| parity accuracy |" in markdown and "val parity accuracy" in markdown
