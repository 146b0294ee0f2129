"""Central evaluation of an adapter: privacy against the attacker suite, utility per task.

What is measured is what a deployment releases (DESIGN.md decision 7). Each central video is
anonymized as the edge anonymizer runs it: its sequence of non-overlapping clip features in
windows of `anonymizer.window` clips, each window one sequence through the adapter. On those
anonymized clip features:

- privacy, `video` protocol (the headline): every attacker of common.attackers reads the
  video's actor attributes from the mean of its anonymized clip features (every central video
  whose actors are known, whatever its task); the privacy number is the worst case (highest
  test cMAP) over the suite;
- privacy, `stills` protocol (the paper's): the same suite on static clips of still images
  (one frame tiled, a sequence of length 1); the paper's attacker (`mlp`) is reported beside
  the suite's worst case;
- utility: each evaluated task's own central protocol (common.tasks), a fresh downstream model
  on the anonymized features of that task's videos.

Every model trains from scratch on the train split, is selected on the validation split, and
is reported on the test split only (the paper reports the best test value over training; we
never look at test to choose). The same procedure runs on raw features (no adapter): the
baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.aam import anonymize_in_windows
from common.atomic import atomic_path
from common.attackers import (
    AttackData,
    AttackResult,
    Split,
    SuiteSettings,
    run_attack_suite,
    worst_case,
)
from common.bias import BiasResult, measure_bias
from common.config import EvaluationConfig, RunConfig
from common.errors import LatentveilError
from common.tasks import TASKS, TaskScore, TaskSplit, get_task

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# The central evaluation set and the full privacy / utility measurement


EVALUATION_SET_VERSION = 3  # 3: videos per task; 2: AR videos only


@dataclass(frozen=True)
class VideoSplit:
    """Central videos of one task and split: their non-overlapping clip features (N, C, d) in
    order, the task's labels (name -> (N, ...)), and their actors' 0/1 attributes (N, A) when
    known (the video privacy protocol attacks those)."""

    clips: np.ndarray
    labels: dict[str, np.ndarray]
    attributes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.clips)


@dataclass(frozen=True)
class TaskVideos:
    """A task's central videos: its class names and its splits."""

    classes: tuple[str, ...]
    splits: dict[str, VideoSplit]


@dataclass(frozen=True)
class EvaluationSet:
    """Cached raw features and labels of the central evaluation world.

    stills[split]: static-clip features (N, d) of still images with 0/1 attributes (N, A);
    tasks[name]: the videos of one task (common.tasks), per split.
    """

    encoder_id: str
    attributes: tuple[str, ...]
    stills: dict[str, Split]
    tasks: dict[str, TaskVideos]
    # The bias protocol's videos (common.bias): labels "action" and "group" (an index into
    # `bias_groups`); None when the world has no bias set.
    bias: TaskVideos | None = None
    bias_groups: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return int(next(iter(self.stills.values())).features.shape[-1])

    def save(self, path: str | Path) -> None:
        """Write as one .npz, atomically."""
        arrays = {"meta": np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)}
        for split, data in self.stills.items():
            arrays[f"stills/{split}/features"] = data.features
            arrays[f"stills/{split}/labels"] = data.labels
        named = [(f"tasks/{task}", videos) for task, videos in self.tasks.items()]
        named += [("bias", self.bias)] if self.bias is not None else []
        for where, videos in named:
            for split, data in videos.splits.items():
                prefix = f"{where}/{split}"
                arrays[f"{prefix}/clips"] = data.clips
                if data.attributes is not None:
                    arrays[f"{prefix}/attributes"] = data.attributes
                for name, labels in data.labels.items():
                    arrays[f"{prefix}/labels/{name}"] = labels
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def _meta(self) -> dict[str, Any]:
        return {
            "version": EVALUATION_SET_VERSION,
            "encoder_id": self.encoder_id,
            "attributes": self.attributes,
            "tasks": {name: list(videos.classes) for name, videos in self.tasks.items()},
            "bias": None if self.bias is None else list(self.bias.classes),
            "bias_groups": list(self.bias_groups),
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
                stills = {
                    split: Split(data[f"stills/{split}/features"], data[f"stills/{split}/labels"])
                    for split in SPLITS
                    if f"stills/{split}/features" in data.files
                }
                tasks = {
                    name: TaskVideos(tuple(classes), _read_splits(data, f"tasks/{name}"))
                    for name, classes in meta["tasks"].items()
                }
                bias = (
                    TaskVideos(tuple(meta["bias"]), _read_splits(data, "bias"))
                    if meta.get("bias") is not None
                    else None
                )
        except (OSError, ValueError, KeyError) as error:
            raise EvaluationError(f"{path} is not a latentveil evaluation set: {error}") from error
        missing = [f"stills/{s}" for s in SPLITS if s not in stills]
        missing += [f"{t}/{s}" for t, v in tasks.items() for s in SPLITS if s not in v.splits]
        missing += [f"bias/{s}" for s in SPLITS if bias is not None and s not in bias.splits]
        if missing:
            raise EvaluationError(f"{path} lacks the splits {', '.join(missing)}")
        groups = tuple(meta.get("bias_groups", ()))
        return cls(meta["encoder_id"], tuple(meta["attributes"]), stills, tasks, bias, groups)


def _read_splits(data: Any, prefix: str) -> dict[str, VideoSplit]:
    splits = {}
    for split in SPLITS:
        if f"{prefix}/{split}/clips" not in data.files:
            continue
        label_prefix = f"{prefix}/{split}/labels/"
        labels = {k[len(label_prefix) :]: data[k] for k in data.files if k.startswith(label_prefix)}
        attributes_key = f"{prefix}/{split}/attributes"
        attributes = data[attributes_key] if attributes_key in data.files else None
        splits[split] = VideoSplit(data[f"{prefix}/{split}/clips"], labels, attributes)
    return splits


class EvaluationError(LatentveilError):
    """An evaluation set that is missing or does not fit."""


def anonymize_sequences(
    adapter: nn.Module | None, clips: np.ndarray, window: int, batch_size: int = 512
) -> np.ndarray:
    """Anonymize (N, C, d) clip sequences as the edge anonymizer does (in windows of `window`
    clips: common.aam.anonymize_in_windows), `batch_size` videos at a time. None (no adapter)
    returns the raw features."""
    if adapter is None:
        return clips
    x = torch.as_tensor(clips, dtype=torch.float32)  # (N, C, d)
    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        out = torch.cat(
            [anonymize_in_windows(adapter, x[i : i + batch_size], window)
             for i in range(0, len(x), batch_size)]
        )  # fmt: skip
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


# ---------------------------------------------------------------------------------------------
# What an evaluation returns


# PrivacyEvaluation's fields and their keys in report.json.
_PRIVACY_KEYS = {
    "cmap": "privacy_cmap",
    "val_cmap": "privacy_val_cmap",
    "attacker": "privacy_attacker",
    "chance_cmap": "privacy_chance_cmap",
    "per_attribute_ap": "privacy_per_attribute_ap",
    "stills_cmap": "privacy_stills_cmap",
    "stills_val_cmap": "privacy_stills_val_cmap",
    "stills_attacker": "privacy_stills_attacker",
    "stills_chance_cmap": "privacy_stills_chance_cmap",
    "stills_paper_cmap": "privacy_stills_paper_cmap",
    "attackers": "privacy_attackers",
}


@dataclass(frozen=True)
class PrivacyEvaluation:
    """The attacker suite's results (percentages; cMAP lower is more private). The headline is
    the worst case on video features; `stills` is the paper's protocol (None where it did not
    run: `evaluation.stills`)."""

    cmap: float  # worst test cMAP on video
    val_cmap: float  # worst val cMAP on video, whichever attacker: what selection reads
    attacker: str
    chance_cmap: float
    per_attribute_ap: dict[str, float | None]
    stills_cmap: float | None
    stills_val_cmap: float | None
    stills_attacker: str | None
    stills_chance_cmap: float | None
    stills_paper_cmap: float | None  # the paper's attacker (mlp) alone, on stills
    attackers: dict[str, dict[str, Any]]  # protocol -> attacker -> AttackResult.as_dict()

    def to_json(self) -> dict[str, Any]:
        """The report's flat `privacy_*` keys."""
        return {key: getattr(self, name) for name, key in _PRIVACY_KEYS.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrivacyEvaluation:
        return cls(**{name: data.get(key) for name, key in _PRIVACY_KEYS.items()})


@dataclass(frozen=True)
class Evaluation:
    """One central evaluation of an adapter (or of raw features): privacy and every evaluated
    task's score."""

    privacy: PrivacyEvaluation
    tasks: dict[str, TaskScore] = field(default_factory=dict)
    bias: BiasResult | None = None  # the bias protocol (common.bias), when evaluated

    def to_json(self) -> dict[str, Any]:
        """Flat keys as in report.json: `privacy_*`, per task `<task>_<metric>`,
        `<task>_<metric>_se`, `<task>_<metric>_change_se` (paired with the raw features', when
        known), `<task>_<metric>_by_kind` (when the task reports one), `<task>_val_<metric>`,
        `<task>_num_test`, and `bias`."""
        out = self.privacy.to_json()
        if self.bias is not None:
            out["bias"] = self.bias.to_json()
        for name, score in self.tasks.items():
            task = get_task(name)
            out[task.test_key] = score.test
            out[f"{task.test_key}_se"] = score.test_se
            if score.change_se is not None:
                out[f"{task.test_key}_change_se"] = score.change_se
            out[task.val_key] = score.val
            out[f"{name}_num_test"] = score.num_test
            if score.by_kind:
                out[f"{task.test_key}_by_kind"] = dict(score.by_kind)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        tasks = {}
        for name in TASKS:
            task = get_task(name)
            if task.test_key in data:
                tasks[name] = TaskScore(
                    data[task.test_key],
                    data[f"{task.test_key}_se"],
                    data[task.val_key],
                    data[f"{name}_num_test"],
                    data.get(f"{task.test_key}_change_se"),
                    dict(data.get(f"{task.test_key}_by_kind") or {}),
                )
        bias = BiasResult.from_json(data["bias"]) if data.get("bias") else None
        return cls(PrivacyEvaluation.from_json(data), tasks, bias)


# ---------------------------------------------------------------------------------------------
# The evaluator


def check_evaluation_set(evaluation_set: EvaluationSet, config: RunConfig) -> None:
    """Raise a clear error unless every task of `tasks.evaluated` has central videos its
    protocol can run on (before any training: a run should not fail at its first evaluation)."""
    missing = [t for t in config.tasks.evaluated if t not in evaluation_set.tasks]
    if missing:
        raise EvaluationError(
            f"tasks.evaluated names {', '.join(missing)}, which the evaluation set has no "
            f"videos of (it has {', '.join(evaluation_set.tasks) or 'none'}); run "
            "`latentveil prepare` again to rebuild it"
        )
    for name in config.tasks.evaluated:
        splits = evaluation_set.tasks[name].splits
        get_task(name).check_splits({s: split.labels for s, split in splits.items()})


class CentralEvaluator:
    """Measures an adapter on the central evaluation set: privacy on videos (headline) and
    stills (the paper's protocol) against the attacker suite, and every task of
    `tasks.evaluated` by its own protocol.

    Keeps what does not depend on the adapter (the raw-feature fits the inversion attacker
    reuses) across calls: make one per run and call `evaluate` at every evaluated round.
    """

    def __init__(self, evaluation_set: EvaluationSet, config: RunConfig):
        check_evaluation_set(evaluation_set, config)
        self.evaluation_set = evaluation_set
        self.config = config.evaluation
        self.window = config.anonymizer.window
        self.tasks = tuple(config.tasks.evaluated)
        self.cache: dict = {}

    def evaluate(self, adapter: nn.Module | None, stills: bool = True) -> Evaluation:
        """Privacy per protocol (worst case over the suite, test and val) and each evaluated
        task's score, on features anonymized by `adapter` (None: raw features). Without
        `stills`, the stills protocol is left out (`with_stills` adds it later)."""
        es = self.evaluation_set
        anonymized = {
            task: {
                s: anonymize_sequences(adapter, videos.splits[s].clips, self.window) for s in SPLITS
            }
            for task, videos in es.tasks.items()
        }
        privacy = self._privacy(adapter, anonymized, stills)
        bias = None
        if self.config.bias and es.bias is not None:
            bias = measure_bias(
                {
                    s: TaskSplit(
                        anonymize_sequences(adapter, es.bias.splits[s].clips, self.window),
                        es.bias.splits[s].labels,
                    )
                    for s in SPLITS
                },
                len(es.bias.classes),
                es.bias_groups,
                self.config,
            )
        scores = {
            name: get_task(name).evaluate(
                {
                    s: TaskSplit(anonymized[name][s], es.tasks[name].splits[s].labels)
                    for s in SPLITS
                },
                es.tasks[name].classes,
                self.config,
            )
            for name in self.tasks
        }
        if adapter is None:  # the raw features: what every later score is paired with
            self.cache["baseline_tasks"] = scores
        else:
            scores = {name: self._paired(name, score) for name, score in scores.items()}
        return Evaluation(privacy, scores, bias)

    def _paired(self, name: str, score: TaskScore) -> TaskScore:
        """`score` with the standard error of its change from the raw features' score on the
        same test videos (unknown until this evaluator has evaluated the raw features)."""
        baseline = self.cache.get("baseline_tasks", {}).get(name)
        if baseline is None or score == baseline:  # no baseline yet, or the baseline itself
            return score
        if score.test_outputs is None or baseline.test_outputs is None:  # nothing to pair
            return score
        labels = self.evaluation_set.tasks[name].splits["test"].labels
        change_se = get_task(name).change_standard_error(score, baseline, labels)
        return replace(score, change_se=change_se)

    def with_stills(self, evaluation: Evaluation, adapter: nn.Module | None) -> Evaluation:
        """`evaluation` (of `adapter`) with the stills protocol, run now if it lacks it."""
        if evaluation.privacy.stills_cmap is not None:
            return evaluation
        privacy = evaluation.privacy
        stills = self._stills(adapter)
        attackers = {**privacy.attackers, "stills": {n: r.as_dict() for n, r in stills.items()}}
        privacy = replace(privacy, **_stills_fields(stills), attackers=attackers)
        return replace(evaluation, privacy=privacy)

    def _stills(self, adapter: nn.Module | None) -> dict[str, AttackResult]:
        """The attacker suite on stills, the paper's protocol."""
        es = self.evaluation_set
        stills = AttackData(
            *(Split(anonymize_stills(adapter, es.stills[s].features), es.stills[s].labels)
              for s in SPLITS),
            raw_train=es.stills["train"].features, raw_val=es.stills["val"].features,
            raw_test=es.stills["test"].features,
        )  # fmt: skip
        return run_attack_suite(
            stills, self.config.attackers, suite_settings(self.config), self.cache
        )

    def _privacy(
        self,
        adapter: nn.Module | None,
        anonymized: dict[str, dict[str, np.ndarray]],
        stills: bool = True,
    ) -> PrivacyEvaluation:
        es = self.evaluation_set
        settings = suite_settings(self.config)
        # Privacy on the videos a deployment releases (the headline): the videos of the tasks
        # of `evaluation.privacy_videos`, with their actors' attributes.
        with_actors = [
            t
            for t in self.config.privacy_videos
            if t in es.tasks and es.tasks[t].splits["train"].attributes is not None
        ]
        if not with_actors:
            raise EvaluationError(
                "the evaluation set has no videos with known actors of the tasks "
                f"{', '.join(self.config.privacy_videos)} (evaluation.privacy_videos) to attack"
            )

        raw = {t: {s: v.splits[s].clips for s in SPLITS} for t, v in es.tasks.items()}

        def videos(split: str, clips: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
            return np.concatenate([video_attack_features(clips[t][split]) for t in with_actors])

        def actors(split: str) -> np.ndarray:
            return np.concatenate([es.tasks[t].splits[split].attributes for t in with_actors])

        video = AttackData(
            *(Split(videos(s, anonymized), actors(s)) for s in SPLITS),
            raw_train=videos("train", raw), raw_val=videos("val", raw),
            raw_test=videos("test", raw),
        )  # fmt: skip
        video_results = run_attack_suite(video, self.config.attackers, settings, self.cache)
        stills_results = self._stills(adapter) if stills else None
        return privacy_summary(video_results, stills_results, es.attributes)


def privacy_summary(
    video: dict[str, AttackResult],
    stills: dict[str, AttackResult] | None,
    attributes: tuple[str, ...],
) -> PrivacyEvaluation:
    """The evaluation's privacy: worst cases per protocol (stills None: not run) and every
    attacker's result."""
    worst_video = worst_case(video)
    return PrivacyEvaluation(
        cmap=worst_video["cmap"],
        val_cmap=worst_video["val_cmap"],
        attacker=worst_video["attacker"],
        chance_cmap=worst_video["chance_cmap"],
        per_attribute_ap=dict(zip(attributes, worst_video["per_attribute_ap"], strict=True)),
        **_stills_fields(stills),
        attackers={
            "video": {name: r.as_dict() for name, r in video.items()},
            "stills": {name: r.as_dict() for name, r in (stills or {}).items()},
        },
    )


def _stills_fields(stills: dict[str, AttackResult] | None) -> dict[str, Any]:
    """PrivacyEvaluation's stills_* fields of the stills suite's results (None: all None)."""
    if stills is None:
        names = ("cmap", "val_cmap", "attacker", "chance_cmap", "paper_cmap")
        return {f"stills_{name}": None for name in names}
    worst = worst_case(stills)
    return {
        "stills_cmap": worst["cmap"],
        "stills_val_cmap": worst["val_cmap"],
        "stills_attacker": worst["attacker"],
        "stills_chance_cmap": worst["chance_cmap"],
        "stills_paper_cmap": stills["mlp"].test_cmap if "mlp" in stills else None,
    }


def measure_privacy_and_utility(
    evaluation_set: EvaluationSet, adapter: nn.Module | None, config: RunConfig
) -> Evaluation:
    """One-off `CentralEvaluator(...).evaluate(adapter)`."""
    return CentralEvaluator(evaluation_set, config).evaluate(adapter)
