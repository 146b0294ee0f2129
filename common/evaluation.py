"""Central evaluation of an adapter: privacy against the attacker suite, utility by a probe.

What is measured is what a deployment releases (DESIGN.md decision 7). Each central video is
anonymized as the edge anonymizer runs it: its sequence of non-overlapping clip features in
windows of `anonymizer.window` clips, each window one sequence through the adapter. On those
anonymized clip features:

- privacy, `video` protocol (the headline): every attacker of common.attackers reads the
  video's actor attributes from the mean of its anonymized clip features; the privacy number is
  the worst case (highest test cMAP) over the suite;
- privacy, `stills` protocol (the paper's): the same suite on static clips of still images
  (one frame tiled, a sequence of length 1); the paper's attacker (`mlp`) is reported beside
  the suite's worst case;
- action recognition: a linear classifier on clip features (each clip labelled with its
  video's action); a video's score averages its clips' logits; top-1.

Every model trains from scratch on the train split, is selected on the validation split, and
is reported on the test split only (the paper reports the best test value over training; we
never look at test to choose). The same procedure runs on raw features (no adapter): the
baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.atomic import atomic_path
from common.attackers import (
    AttackData,
    AttackResult,
    Split,
    SuiteSettings,
    run_attack_suite,
    worst_case,
)
from common.config import EvaluationConfig
from common.errors import LatentveilError
from common.fitting import fit_selected_on_val
from common.metrics import accuracy_standard_error, top1_accuracy


@dataclass(frozen=True)
class ProbeResult:
    """Action recognition measured by the linear probe (percentages)."""

    test_top1: float
    test_top1_se: float
    val_top1: float
    best_epoch: int
    num_test: int


def _standardizer(train: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.as_tensor(train, dtype=torch.float32).reshape(-1, train.shape[-1])  # (M, d)
    return flat.mean(0), flat.std(0).clamp_min(1e-6)


def _to_tensor(features: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (torch.as_tensor(features, dtype=torch.float32) - mean) / std


def run_linear_probe(
    train: Split,
    val: Split,
    test: Split,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> ProbeResult:
    """Train a linear action classifier; features are (N, n_clips, d), labels (N,).

    Training uses every clip as an example; validation and test average each video's clip
    logits before the argmax.
    """
    mean, std = _standardizer(train.features)
    x_train = _to_tensor(train.features, mean, std)  # (N, n_clips, d)
    n_clips, d = x_train.shape[1], x_train.shape[2]
    y_train = torch.as_tensor(train.labels, dtype=torch.long).repeat_interleave(n_clips)
    x_train = x_train.reshape(-1, d)  # (N * n_clips, d)
    x_val, x_test = (_to_tensor(s.features, mean, std) for s in (val, test))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = nn.Linear(d, num_classes)

    def video_logits(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return probe(x).mean(dim=1).numpy()  # (N, n_clips, C) -> (N, C)

    fit = fit_selected_on_val(
        probe,
        F.cross_entropy,
        x_train,
        y_train,
        lambda: top1_accuracy(video_logits(x_val), val.labels),
        epochs, lr, batch_size, seed,
    )  # fmt: skip
    test_top1 = top1_accuracy(video_logits(x_test), test.labels)
    return ProbeResult(
        test_top1=test_top1,
        test_top1_se=accuracy_standard_error(test_top1, len(test.labels)),
        val_top1=fit.best_score,
        best_epoch=fit.best_epoch,
        num_test=len(test.labels),
    )


# ---------------------------------------------------------------------------------------------
# The central evaluation set and the full privacy / utility measurement


# The evaluation set's file name in a run folder (written by simulations, read by the server).
EVALUATION_SET_FILE = "evaluation_set.npz"
EVALUATION_SET_VERSION = 2  # 2: videos carry their clip sequences and actors' attributes


@dataclass(frozen=True)
class VideoSplit:
    """Central videos of one split: their non-overlapping clip features (N, C, d) in order,
    their action labels (N,) and their actors' 0/1 attributes (N, A)."""

    clips: np.ndarray
    actions: np.ndarray
    attributes: np.ndarray


@dataclass(frozen=True)
class EvaluationSet:
    """Cached raw features and labels of the central evaluation world.

    stills[split]: static-clip features (N, d) of still images with 0/1 attributes (N, A);
    videos[split]: clip sequences of action videos with actions and actors' attributes.
    """

    encoder_id: str
    attributes: tuple[str, ...]
    actions: tuple[str, ...]
    stills: dict[str, Split]
    videos: dict[str, VideoSplit]

    @property
    def dim(self) -> int:
        return int(next(iter(self.stills.values())).features.shape[-1])

    def save(self, path: str | Path) -> None:
        """Write as one .npz, atomically."""
        arrays = {"meta": np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)}
        for split, data in self.stills.items():
            arrays[f"stills/{split}/features"] = data.features
            arrays[f"stills/{split}/labels"] = data.labels
        for split, data in self.videos.items():
            for name in ("clips", "actions", "attributes"):
                arrays[f"videos/{split}/{name}"] = getattr(data, name)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def _meta(self) -> dict[str, Any]:
        return {
            "version": EVALUATION_SET_VERSION,
            "encoder_id": self.encoder_id,
            "attributes": self.attributes,
            "actions": self.actions,
        }

    @classmethod
    def load(cls, path: str | Path) -> EvaluationSet:
        """Read a set written by `save`; a missing, old or malformed file is a clear error."""
        path = Path(path)
        if not path.is_file():
            raise EvaluationError(f"evaluation set not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("version") != EVALUATION_SET_VERSION:
                    raise EvaluationError(
                        f"{path} is an evaluation set of an older version; run `latentveil "
                        "prepare` on the run folder again to rebuild it from the cached features"
                    )
                splits = sorted({k.split("/")[1] for k in data.files if k.count("/") == 2})
                stills, videos = {}, {}
                for split in splits:
                    if f"stills/{split}/features" in data.files:
                        stills[split] = Split(
                            data[f"stills/{split}/features"], data[f"stills/{split}/labels"]
                        )
                    if f"videos/{split}/clips" in data.files:
                        videos[split] = VideoSplit(
                            *(
                                data[f"videos/{split}/{n}"]
                                for n in ("clips", "actions", "attributes")
                            )
                        )
        except (OSError, ValueError, KeyError) as error:
            raise EvaluationError(f"{path} is not a latentveil evaluation set: {error}") from error
        missing = [f"{kind}/{s}" for kind, have in (("stills", stills), ("videos", videos))
                   for s in ("train", "val", "test") if s not in have]  # fmt: skip
        if missing:
            raise EvaluationError(f"{path} lacks the splits {', '.join(missing)}")
        return cls(
            meta["encoder_id"], tuple(meta["attributes"]), tuple(meta["actions"]), stills, videos
        )


class EvaluationError(LatentveilError):
    """An evaluation set that is missing or does not fit."""


def anonymize_sequences(
    adapter: nn.Module | None, clips: np.ndarray, window: int, batch_size: int = 512
) -> np.ndarray:
    """Anonymize (N, C, d) clip sequences as the edge anonymizer does: each video's clips in
    consecutive windows of `window` clips, each window one sequence through the adapter (a last,
    shorter window is a sequence of its own). None (no adapter) returns the raw features."""
    if adapter is None:
        return clips
    if window < 1:
        raise ValueError(f"the anonymizer window must be at least 1 clip, got {window}")
    x = torch.as_tensor(clips, dtype=torch.float32)  # (N, C, d)
    was_training = adapter.training
    adapter.eval()
    out = torch.empty_like(x)
    with torch.no_grad():
        for start in range(0, x.shape[1], window):
            stop = min(start + window, x.shape[1])
            for i in range(0, len(x), batch_size):
                out[i : i + batch_size, start:stop] = adapter(x[i : i + batch_size, start:stop])
    adapter.train(was_training)
    return out.numpy()


def anonymize_stills(adapter: nn.Module | None, features: np.ndarray) -> np.ndarray:
    """Anonymize (N, d) static-clip features, each a sequence of length 1."""
    if adapter is None:
        return features
    return anonymize_sequences(adapter, features[:, None, :], window=1)[:, 0]


def video_attack_features(anonymized_clips: np.ndarray) -> np.ndarray:
    """What the video attackers read of a video: the mean of its released clip features."""
    return anonymized_clips.mean(axis=1)  # (N, C, d) -> (N, d)


def suite_settings(config: EvaluationConfig, seed: int = 0) -> SuiteSettings:
    return SuiteSettings(
        max_epochs=config.attacker_epochs,
        patience=config.attacker_patience,
        lr=config.attacker_lr,
        batch_size=config.batch_size,
        seed=seed,
    )


class CentralEvaluator:
    """Measures an adapter on the central evaluation set: privacy on videos (headline) and
    stills (the paper's protocol) against the attacker suite, and AR by a linear probe.

    Keeps what does not depend on the adapter (the raw-feature fits the inversion attacker
    reuses) across calls: make one per run and call `evaluate` at every evaluated round.
    """

    def __init__(self, evaluation_set: EvaluationSet, config: EvaluationConfig, window: int):
        self.evaluation_set = evaluation_set
        self.config = config
        self.window = window
        self.cache: dict = {}

    def evaluate(self, adapter: nn.Module | None) -> dict[str, Any]:
        """Percentages: worst-case privacy cMAP per protocol (test, and val for selection),
        every attacker's result, chance cMAP, and AR top-1 with its standard error."""
        es, config = self.evaluation_set, self.config
        splits = ("train", "val", "test")
        anonymized = {
            s: anonymize_sequences(adapter, es.videos[s].clips, self.window) for s in splits
        }
        settings = suite_settings(config)

        # Privacy on the videos a deployment releases (the headline).
        raw_video = {s: video_attack_features(es.videos[s].clips) for s in splits}
        video = AttackData(
            *(Split(video_attack_features(anonymized[s]), es.videos[s].attributes) for s in splits),
            raw_train=raw_video["train"], raw_val=raw_video["val"], raw_test=raw_video["test"],
        )  # fmt: skip
        video_results = run_attack_suite(video, config.attackers, settings, self.cache)

        # Privacy on stills, the paper's protocol.
        stills = AttackData(
            *(Split(anonymize_stills(adapter, es.stills[s].features), es.stills[s].labels)
              for s in splits),
            raw_train=es.stills["train"].features, raw_val=es.stills["val"].features,
            raw_test=es.stills["test"].features,
        )  # fmt: skip
        stills_results = run_attack_suite(stills, config.attackers, settings, self.cache)

        probe = run_linear_probe(
            *(Split(anonymized[s], es.videos[s].actions) for s in splits),
            len(es.actions),
            epochs=config.probe_epochs,
            lr=config.probe_lr,
            batch_size=config.batch_size,
        )
        return privacy_summary(video_results, stills_results, es.attributes) | {
            "ar_top1": probe.test_top1,
            "ar_top1_se": probe.test_top1_se,
            "ar_val_top1": probe.val_top1,
            "ar_num_test": probe.num_test,
        }


def privacy_summary(
    video: dict[str, AttackResult], stills: dict[str, AttackResult], attributes: tuple[str, ...]
) -> dict[str, Any]:
    """The evaluation's privacy keys: worst cases per protocol and every attacker's result."""
    worst_video, worst_stills = worst_case(video), worst_case(stills)

    def named(aps: list[float | None]) -> dict[str, float | None]:
        return dict(zip(attributes, aps, strict=True))

    return {
        "privacy_cmap": worst_video["cmap"],
        "privacy_val_cmap": worst_video["val_cmap"],
        "privacy_attacker": worst_video["attacker"],
        "privacy_chance_cmap": worst_video["chance_cmap"],
        "privacy_per_attribute_ap": named(worst_video["per_attribute_ap"]),
        "privacy_stills_cmap": worst_stills["cmap"],
        "privacy_stills_val_cmap": worst_stills["val_cmap"],
        "privacy_stills_attacker": worst_stills["attacker"],
        "privacy_stills_chance_cmap": worst_stills["chance_cmap"],
        "privacy_stills_paper_cmap": stills["mlp"].test_cmap if "mlp" in stills else None,
        "privacy_attackers": {
            "video": {name: r.as_dict() for name, r in video.items()},
            "stills": {name: r.as_dict() for name, r in stills.items()},
        },
    }


def measure_privacy_and_utility(
    evaluation_set: EvaluationSet, adapter: nn.Module | None, config: EvaluationConfig, window: int
) -> dict[str, Any]:
    """One-off `CentralEvaluator(...).evaluate(adapter)`."""
    return CentralEvaluator(evaluation_set, config, window).evaluate(adapter)
