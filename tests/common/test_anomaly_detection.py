"""Anomaly detection behind the task interface: labels from manifest entries, the MGFN-style
head and loss, the site metric and the central protocol on generated features in which the
anomalous clips carry a planted direction."""

import numpy as np
import pytest
import torch

from common.config import EvaluationConfig, load_config
from common.evaluation import CentralEvaluator, TaskVideos, VideoSplit, check_evaluation_set
from common.metrics import video_frame_auc
from common.model import build_model
from common.sitedata import TaskArrays, as_tensors
from common.tasks import TASKS, TaskSplit
from common.tasks.anomaly_detection import (
    CHANCE_AUC,
    MAGNITUDE_MARGIN,
    MAGNITUDE_WEIGHT,
    MAX_ANOMALIES,
    TRAIN_VIDEOS_PER_BATCH,
    AnomalyDataError,
    AnomalyDetection,
    AnomalyHead,
    auc_by_kind,
    mgfn_loss,
    top_k_mean,
)
from common.training import evaluate_site, train_local
from tests import fakes
from tests.fakes import site_data

FRAMES, CLIPS = 160, 10


def entry(anomalies: list[tuple[int, int]], video_id: str = "ad_0001") -> dict:
    """A manifest entry of the world's `ad` dataset."""
    return {
        "video_id": video_id,
        "num_frames": FRAMES,
        "labels": {
            "anomalous": bool(anomalies),
            "anomalies": [{"start": s, "end": e, "anomaly": "fall"} for s, e in anomalies],
            "segments": [{"start": 0, "end": 40, "action": 2, "action_name": "wave"}],
        },
    }


def planted_videos(n: int, seed: int, signal: float, dim: int = 32) -> TaskSplit:
    """n videos of CLIPS clip features (every other one anomalous, with one anomaly of 10-39
    frames): noise, a per-video offset (its scene), and in each clip `signal` times its overlap
    with the anomaly along one fixed direction (the same in every split)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=dim)
    direction /= np.linalg.norm(direction)
    clips = rng.normal(size=(n, CLIPS, dim)) + rng.normal(size=(n, 1, dim))  # (N, C, d)
    anomalous = np.arange(n) % 2
    entries = []
    frames_per_clip = FRAMES // CLIPS
    for i in range(n):
        if not anomalous[i]:
            entries.append(entry([]))
            continue
        length = int(rng.integers(10, 40))
        start = int(rng.integers(0, FRAMES - length))
        entries.append(entry([(start, start + length)]))
        for c in range(CLIPS):
            lo, hi = c * frames_per_clip, (c + 1) * frames_per_clip
            overlap = max(0, min(start + length, hi) - max(start, lo)) / frames_per_clip
            clips[i, c] += signal * overlap * direction
    labels = [TASKS.get("ad").labels(e) for e in entries]
    return TaskSplit(
        clips.astype(np.float32), {k: np.array([lab[k] for lab in labels]) for k in labels[0]}
    )


def as_torch(labels: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in labels.items()}


def test_ad_is_registered_under_its_data_contract():
    task = TASKS.get("ad")
    assert isinstance(task, AnomalyDetection)
    assert (task.name, task.dataset, task.metric, task.title) == ("ad", "ad", "auc", "AD AUC")
    assert (task.test_key, task.val_key) == ("ad_auc", "ad_val_auc")


def test_labels_normalise_and_pad_the_anomaly_ranges():
    task = TASKS.get("ad")
    anomalous = task.labels(entry([(71, 101)]))
    assert anomalous["anomalous"] == 1 and anomalous["num_frames"] == FRAMES
    assert anomalous["anomalies"].dtype == np.float32
    assert anomalous["anomalies"].shape == (MAX_ANOMALIES, 2)
    np.testing.assert_allclose(anomalous["anomalies"][0], [71 / 160, 101 / 160])
    np.testing.assert_array_equal(anomalous["anomalies"][1:], -1)
    normal = task.labels(entry([]))
    assert normal["anomalous"] == 0
    np.testing.assert_array_equal(normal["anomalies"], -1)
    # Videos stack as the site data does, and become int64 / float32 tensors.
    stacked = {k: np.array([normal[k], anomalous[k]]) for k in normal}
    tensors = as_tensors(TaskArrays(["a", "b"], np.zeros((2, 1, 4)), np.zeros((2, 2, 4)), stacked))
    assert tensors.labels["anomalous"].dtype == torch.int64
    assert tensors.labels["anomalies"].shape == (2, MAX_ANOMALIES, 2)
    assert tensors.labels["anomalies"].dtype == torch.float32
    assert tensors.labels["num_frames"].tolist() == [FRAMES, FRAMES]


def test_more_anomalies_than_a_label_holds_name_the_video():
    ranges = [(10 * i, 10 * i + 5) for i in range(MAX_ANOMALIES + 1)]
    with pytest.raises(AnomalyDataError, match="ad_0042 has 5 anomalies"):
        TASKS.get("ad").labels(entry(ranges, video_id="ad_0042"))


def test_the_head_scores_each_segment_in_0_1_and_ignores_padding():
    torch.manual_seed(0)
    head = AnomalyHead(256).eval()
    assert sum(p.numel() for p in head.parameters()) < 30_000
    features = 3 * torch.randn(4, CLIPS, 256)
    scores, magnitudes = head.segments(features)
    assert scores.shape == magnitudes.shape == (4, CLIPS)
    assert ((scores > 0) & (scores < 1)).all() and (magnitudes >= 0).all()
    assert torch.equal(head(features), scores)
    # What sits at padded positions does not reach the valid ones.
    padding = torch.zeros(4, CLIPS, dtype=torch.bool)
    padding[:, 7:] = True
    changed = features.clone()
    changed[:, 7:] = 100 * torch.randn(4, 3, 256)
    torch.testing.assert_close(
        head(features, padding)[:, :7], head(changed, padding)[:, :7], rtol=0, atol=1e-6
    )


def test_top_k_mean_by_hand():
    values = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.2, 0.4, 0.8, 0.6]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, True]])
    # Row 0: the 2 largest are 0.9 and 0.5; row 1 without its padded 0.8: 0.6 alone (k = 1).
    torch.testing.assert_close(
        top_k_mean(values, valid, torch.tensor([2, 1])), torch.tensor([0.7, 0.6])
    )


def test_the_magnitude_term_needs_both_kinds_and_rewards_the_margin():
    scores = torch.full((4, CLIPS), 0.3, dtype=torch.float64)
    anomalous = torch.tensor([0, 0, 1, 1])
    same = torch.ones(4, CLIPS, dtype=torch.float64)
    apart = same.clone()
    apart[2:] += 2 * MAGNITUDE_MARGIN  # anomalous magnitudes beyond the margin
    # Normal magnitudes equal: the pull term is 0 and the push term the margin squared.
    gap = mgfn_loss(scores, same, anomalous) - mgfn_loss(scores, apart, anomalous)
    assert float(gap) == pytest.approx(MAGNITUDE_WEIGHT * MAGNITUDE_MARGIN**2)
    # One kind only: no contrast, whatever the magnitudes (and no error).
    for labels in (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)):
        loss = mgfn_loss(scores, same, labels)
        assert torch.isfinite(loss)
        assert float(loss) == pytest.approx(float(mgfn_loss(scores, 5 * apart, labels)))


def test_the_loss_falls_and_the_head_finds_the_planted_anomalies():
    videos = planted_videos(32, seed=0, signal=10.0, dim=16)
    features, labels = torch.from_numpy(videos.clips), as_torch(videos.labels)
    task = TASKS.get("ad")
    torch.manual_seed(0)
    head = AnomalyHead(16)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)

    def eval_loss() -> float:
        head.eval()
        with torch.no_grad():
            return float(task.loss(head, features, labels))

    before = eval_loss()
    for _ in range(150):
        head.train()
        loss = task.loss(head, features, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < 0.5 * before
    # From video labels alone, the frames of the anomalies rank above the others.
    assert task.site_metric(head.eval(), features, labels) > 90


def test_the_site_metric_is_the_frame_auc_and_chance_without_anomalous_frames():
    videos = planted_videos(8, seed=1, signal=10.0)
    head = AnomalyHead(32).eval()
    features, labels = torch.from_numpy(videos.clips), as_torch(videos.labels)
    expected = video_frame_auc(
        head(features).detach().numpy(), videos.labels["anomalies"], videos.labels["num_frames"]
    )
    task = TASKS.get("ad")
    assert task.site_metric(head, features, labels) == pytest.approx(expected)
    normal = labels["anomalous"] == 0
    only_normal = {k: v[normal] for k, v in labels.items()}
    assert task.site_metric(head, features[normal], only_normal) == CHANCE_AUC


def test_central_evaluation_finds_planted_anomalies_and_is_at_chance_on_noise():
    task = TASKS.get("ad")
    config = EvaluationConfig()
    sizes = {"train": 24, "val": 8, "test": 24}
    planted = {s: planted_videos(n, seed, 10.0) for seed, (s, n) in enumerate(sizes.items())}
    score = task.evaluate(planted, (), config)
    assert score.test > 90 and score.val > 90
    assert 0 < score.test_se < 5 and score.num_test == 24

    # Noise: trained and selected the same way, nothing to find (100 test videos).
    sizes["test"] = 100
    noise = {s: planted_videos(n, 10 + seed, 0.0) for seed, (s, n) in enumerate(sizes.items())}
    score = task.evaluate(noise, (), config)
    assert abs(score.test - 50) < 3 * score.test_se


def with_kinds(videos: TaskSplit, kinds: np.ndarray) -> TaskSplit:
    """`videos` with a `kind` label: `kinds` cycled over the anomalous videos, -1 normal."""
    anomalous = videos.labels["anomalous"].astype(bool)
    kind = np.full(len(anomalous), -1)
    kind[anomalous] = np.resize(kinds, anomalous.sum())
    return TaskSplit(videos.clips, videos.labels | {"kind": kind})


def test_auc_by_kind_reads_each_kind_against_every_normal_video():
    # one 10-frame segment per video; anomalies over the first half of videos 2 and 3
    labels = {
        "anomalous": np.array([0, 0, 1, 1]),
        "anomalies": np.array([[[-1, -1]], [[-1, -1]], [[0.0, 0.5]], [[0.0, 0.5]]]),
        "num_frames": np.array([10, 10, 10, 10]),
        "kind": np.array([-1, -1, 0, 1]),
    }
    scores = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.1, 0.9]])  # (N, 2 segments)
    # fall: its 5 anomalous frames (0.9) above all 25 normal ones; fight: below all of them
    assert auc_by_kind(scores, labels, ("fall", "fight")) == pytest.approx(
        {"fall": 100.0, "fight": 0.0}
    )
    # a kind without videos is left out; labels without kinds give nothing
    assert set(auc_by_kind(scores, labels, ("fall", "fight", "run"))) == {"fall", "fight"}
    no_kind = {k: v for k, v in labels.items() if k != "kind"}
    assert auc_by_kind(scores, no_kind, ("fall", "fight")) == {}
    # a normal video with a kind, or a kind past the names, is refused
    with pytest.raises(AnomalyDataError, match="do not fit"):
        auc_by_kind(scores, labels | {"kind": np.array([0, -1, 0, 1])}, ("fall", "fight"))
    with pytest.raises(AnomalyDataError, match="do not fit"):
        auc_by_kind(scores, labels, ("fall",))
    with pytest.raises(AnomalyDataError, match="do not fit"):
        auc_by_kind(scores, labels | {"kind": np.array([-2, -1, 0, 1])}, ("fall", "fight"))
    with pytest.raises(AnomalyDataError, match="3 AD kind labels for 4 videos"):
        auc_by_kind(scores, labels | {"kind": np.array([-1, 0, 1])}, ("fall", "fight"))
    # a kind whose videos hold no anomalous frame (a range shorter than a frame) has no AUC
    short = labels["anomalies"].copy()
    short[3, 0] = [0.0, 0.01]
    assert set(auc_by_kind(scores, labels | {"anomalies": short}, ("fall", "fight"))) == {"fall"}


def test_central_evaluation_reports_which_kind_of_anomaly_it_finds():
    # kind 0's anomalies are planted along the direction, kind 1's carry nothing (24 test
    # videos of each kind: with 12, the blank kind's AUC strays far from chance by the draw)
    splits = {}
    for seed, (split, n) in enumerate({"train": 48, "val": 16, "test": 96}.items()):
        planted = with_kinds(planted_videos(n, seed, 10.0), np.array([0, 1]))
        blank = planted_videos(n, seed, 0.0)  # the same noise, no signal
        kind_1 = planted.labels["kind"] == 1
        clips = np.where(kind_1[:, None, None], blank.clips, planted.clips)
        splits[split] = TaskSplit(clips, planted.labels)
    score = TASKS.get("ad").evaluate(splits, ("planted", "blank"), EvaluationConfig())
    assert set(score.by_kind) == {"planted", "blank"}
    assert score.by_kind["planted"] > 90
    assert abs(score.by_kind["blank"] - 50) < 15
    assert score.by_kind["blank"] < score.test < score.by_kind["planted"]


def test_central_heads_train_in_batches_of_videos_whatever_the_probes_batch_size():
    # evaluation.batch_size counts clips for the AR probe (256): as a count of AD videos it made
    # one step an epoch. Any batch size from TRAIN_VIDEOS_PER_BATCH up trains the same heads.
    splits = {s: planted_videos(40, seed, 3.0) for seed, s in enumerate(("train", "val", "test"))}
    task = TASKS.get("ad")
    scores = {
        size: task.evaluate(splits, (), EvaluationConfig(probe_epochs=2, batch_size=size))
        for size in (TRAIN_VIDEOS_PER_BATCH, 256, TRAIN_VIDEOS_PER_BATCH // 2)
    }
    assert scores[256] == scores[TRAIN_VIDEOS_PER_BATCH]
    assert scores[TRAIN_VIDEOS_PER_BATCH // 2] != scores[TRAIN_VIDEOS_PER_BATCH]


def test_central_evaluation_is_seeded_and_leaves_the_global_generator_alone():
    splits = {s: planted_videos(8, seed, 10.0) for seed, s in enumerate(("train", "val", "test"))}
    config = EvaluationConfig(probe_epochs=3)
    torch.manual_seed(5)
    untouched_next = torch.rand(1)
    torch.manual_seed(5)
    first = TASKS.get("ad").evaluate(splits, (), config)
    assert torch.equal(torch.rand(1), untouched_next)
    torch.manual_seed(6)
    assert TASKS.get("ad").evaluate(splits, (), config) == first


def test_central_evaluation_refuses_a_split_of_one_kind():
    splits = {s: planted_videos(8, seed, 10.0) for seed, s in enumerate(("train", "val", "test"))}
    labels = splits["val"].labels
    splits["val"] = TaskSplit(splits["val"].clips, labels | {"anomalous": np.zeros(8, int)})
    with pytest.raises(AnomalyDataError, match="val split has only normal videos"):
        TASKS.get("ad").evaluate(splits, (), EvaluationConfig())


def test_a_run_evaluating_ad_on_a_split_of_one_kind_stops_before_any_training():
    # The evaluator is made before round 0: the error comes before any training or evaluation.
    es = fakes.evaluation_set()
    ad = {s: planted_videos(8, seed, 10.0) for seed, s in enumerate(("train", "val", "test"))}
    ad["test"] = TaskSplit(ad["test"].clips, ad["test"].labels | {"anomalous": np.ones(8, int)})
    es.tasks["ad"] = TaskVideos((), {s: VideoSplit(v.clips, v.labels, None) for s, v in ad.items()})
    config = load_config(None, ["tasks.evaluated={ar: 2.0, ad: 2.0}"])
    with pytest.raises(AnomalyDataError, match="test split has only anomalous videos.*ad=null"):
        CentralEvaluator(es, config)
    check_evaluation_set(es, load_config(None, ["tasks.evaluated={ar: 2.0}"]))  # AD not asked


def test_a_site_with_ad_videos_co_trains_the_ad_head_and_reports_its_auc():
    config = load_config(None, ["tasks.seen={ar: 1.0, ad: 1.0}", "train.batch_size=8"])
    model = build_model(16, config, seed=0)
    assert isinstance(model.heads["ad"], AnomalyHead)
    videos = planted_videos(12, seed=3, signal=10.0, dim=16)
    statics = np.random.default_rng(0).normal(size=(12, 2, 16))
    ids = [f"ad_{i}" for i in range(12)]
    data = site_data(1) | {"ad": as_tensors(TaskArrays(ids, videos.clips, statics, videos.labels))}
    before = {n: p.detach().clone() for n, p in model.heads["ad"].named_parameters()}
    train_local(model, data, config, seed=0)
    assert any(not torch.equal(p, before[n]) for n, p in model.heads["ad"].named_parameters())
    metrics = evaluate_site(model, data, window=config.anonymizer.window)
    assert set(metrics) == {"ar_top1", "ad_auc"}
    assert 0 <= metrics["ad_auc"] <= 100
