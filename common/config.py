"""One config schema for everything a run needs.

The schema is a tree of frozen dataclasses. YAML files are instances of it; `--set a.b=c`
overrides a leaf with the value coerced to the field's type. An unknown key anywhere is an
error naming the key and the closest valid one. The resolved config is written next to every
run's outputs (`save_config`).

    cfg = load_config("simulations/configs/default.yaml", ["train.lr=3e-4", "world.sites=4"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.atomic import atomic_write_text
from common.compression import METHODS as COMPRESSION_METHODS
from common.errors import LatentveilError

# Whether encoder and task names are checked against their registries (which import torch).
_NAMES_CHECKED = [True]


@contextmanager
def registry_names_unchecked() -> Iterator[None]:
    """Build configs without checking encoder and task names against their registries.

    For a config that was checked where the run started: a deployed site's ClientApp process
    reads the run's config for every message, and the check would import torch there (3.5 s
    of every message). An unknown name still fails, clearly, where the registry is used.
    """
    previous = _NAMES_CHECKED[0]
    _NAMES_CHECKED[0] = False
    try:
        yield
    finally:
        _NAMES_CHECKED[0] = previous


class ConfigError(LatentveilError, ValueError):
    """A config file or override that does not fit the schema."""


SELECT_RULES = ("val", "last")  # evaluation.select
STILLS_ROUNDS = ("selected", "evaluated")  # evaluation.stills
BUDGET_VIEWS = ("static", "clips", "both")  # loss.budget_views
BUDGET_NEGATIVES = ("all", "same_action")  # loss.budget_negatives
TASK_AVERAGES = ("tasks", "videos")  # loss.task_average
SURGERY_SCOPES = ("tasks", "objective", "each_task")  # loss.budget_surgery_scope
BUDGET_COMBINES = ("average", "sum")  # loss.budget_combine
TASK_SCHEDULES = ("repeat", "once")  # train.task_schedule
ATTACKER_NAMES = ("mlp", "logistic", "knn", "boosted_trees", "inversion")  # common.attackers


FEDERATION_MODES = ("federated", "centralized")  # federation.mode
FEATURE_DTYPES = ("float16", "float32")  # features.dtype
WORLD_PRESETS = ("tiny", "default", "large")  # simulations.world.presets.PRESETS (a test checks)


def _choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"'{where}' must be one of {', '.join(choices)}, not {value!r}")


def _at_least(where: str, value: float, minimum: float, why: str = "") -> None:
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(f"'{where}' must be at least {minimum:g}{why}, not {value!r}")


def _positive(where: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"'{where}' must be greater than 0, not {value!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """The frozen video encoder f_E (see common.encoders)."""

    name: str = "tiny3d"  # registry name: tiny3d | videomae | module
    # Local weights: a tiny3d checkpoint ("builtin" = the shipped pre-trained one, "" = random
    # initialisation from `seed`), a VideoMAE folder, or an exported module file.
    path: str = "builtin"
    clip_len: int = 16  # frames per clip
    frame_size: int = 64  # square input side (tiny3d); VideoMAE reads it from its config
    dim: int = 256  # feature width d (tiny3d); others report their own
    seed: int = 0  # initialisation seed when tiny3d has no checkpoint

    def __post_init__(self) -> None:
        if _NAMES_CHECKED[0]:
            from common.encoders import ENCODERS  # here: common.encoders imports this module

            if self.name not in ENCODERS:
                raise ConfigError(
                    f"'encoder.name' names an unknown encoder {self.name!r}; registered "
                    f"encoders: {', '.join(sorted(ENCODERS.names()))}"
                )
        _at_least("encoder.clip_len", self.clip_len, 1)
        _at_least("encoder.frame_size", self.frame_size, 1)
        _at_least("encoder.dim", self.dim, 1)


@dataclass(frozen=True)
class FeaturesConfig:
    """How clips are cut from videos and cached (see common.video and common.features)."""

    clip_stride: int = 1  # frame step inside a clip
    clip_step: int = 16  # first-frame distance between consecutive clips (16 = non-overlapping)
    static_clips: int = 2  # K frames per video tiled into static clips
    eval_clips: int = 5  # evenly spaced clips per video for evaluation
    dtype: str = "float16"  # float16 | float32 in the HDF5 store
    batch_size: int = 32  # clips per encoder forward pass

    def __post_init__(self) -> None:
        _at_least("features.clip_stride", self.clip_stride, 1)
        _at_least("features.clip_step", self.clip_step, 1)
        _at_least("features.static_clips", self.static_clips, 2,
                  " (the privacy budget pairs two static clips of a video)")  # fmt: skip
        _at_least("features.eval_clips", self.eval_clips, 0)
        _choice("features.dtype", self.dtype, FEATURE_DTYPES)
        _at_least("features.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class AnonymizerConfig:
    """The Anonymizing Adapter Module f_A (see common.aam)."""

    layers: int = 3
    heads: int = 8
    ff_ratio: float = 2.0  # 3 layers at d=768 -> 14.2M params, the paper's Table 13 scale
    dropout: float = 0.0
    # Consecutive clips per anonymized sequence, in training and in deployment alike (a video
    # longer than this is anonymized in consecutive windows; a shorter one is one sequence).
    window: int = 8
    # Rank of the adapter's output (0 = full rank, identity at initialisation): common.aam.
    bottleneck: int = 0
    # Where the adapter starts: "random" (seeded initial weights), or "discriminant": its output
    # bottleneck is the linear discriminant projection of the sites' clips that show an
    # action, from every task trained at a positive weight (AR's clips, TAD's clips inside a
    # segment; common.discriminant; the blocks start as the identity, so round 0 IS that
    # projection), fitted from the moments every site sends once before round 1, and round 0
    # is evaluated and may be selected like any round.
    init: str = "random"
    # The discriminant's shrinkage of the within-action covariance (common.discriminant).
    shrinkage: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 <= self.bottleneck:
            raise ConfigError(f"'anonymizer.bottleneck' must be >= 0, got {self.bottleneck}")
        if self.init not in ("random", "discriminant"):
            raise ConfigError(
                f"'anonymizer.init' must be random or discriminant, not {self.init!r}"
            )
        if not 0 <= self.shrinkage <= 1:  # also NaN
            raise ConfigError(f"'anonymizer.shrinkage' must be in [0, 1], got {self.shrinkage!r}")
        if self.init == "discriminant" and self.bottleneck == 0:
            raise ConfigError(
                "'anonymizer.init' discriminant puts the projection in the output bottleneck: "
                "set 'anonymizer.bottleneck' (at most the number of actions minus one)"
            )
        if self.window < 1:
            raise ConfigError(f"'anonymizer.window' must be at least 1 clip, got {self.window}")
        _at_least("anonymizer.layers", self.layers, 0)
        _at_least("anonymizer.heads", self.heads, 1)
        _positive("anonymizer.ff_ratio", self.ff_ratio)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'anonymizer.dropout' must be in [0, 1), not {self.dropout!r}")


@dataclass(frozen=True)
class HeadsConfig:
    """Sizes of the task heads trained with the adapter (common.tasks)."""

    num_actions: int = 8  # action recognition's classes

    def __post_init__(self) -> None:
        _at_least("heads.num_actions", self.num_actions, 2)


def _task_names(where: str, tasks: dict[str, float]) -> None:
    if not tasks:
        raise ConfigError(f"'{where}' needs at least one task")
    if not _NAMES_CHECKED[0]:
        return
    from common.tasks import TASKS  # here: common.tasks imports this module

    for name in tasks:
        if name not in TASKS:
            raise ConfigError(
                f"'{where}' names an unknown task {name!r}; registered tasks: "
                f"{', '.join(TASKS.names())}"
            )


@dataclass(frozen=True)
class TasksConfig:
    """Which tasks (common.tasks) the sites train and the server evaluates."""

    # Trained at the sites with the adapter, each with its weight inside L_T. A site without
    # data for a task skips that task's term.
    seen: dict[str, float] = field(default_factory=lambda: {"ar": 1.0})
    # Evaluated centrally by a fresh downstream head (a task need not be seen to be evaluated),
    # each with the largest drop of its VALIDATION metric below the raw features', in points,
    # that a round may have and still be selected (server.selection).
    evaluated: dict[str, float] = field(default_factory=lambda: {"ar": 2.0})

    def __post_init__(self) -> None:
        _task_names("tasks.seen", self.seen)
        _task_names("tasks.evaluated", self.evaluated)


@dataclass(frozen=True)
class LossConfig:
    """Weights of L = w_lc * L_LC + w_t * L_T - w_b * L_B and the NT-Xent temperature."""

    w_lc: float = 100.0
    w_t: float = 1.0
    w_b: float = 1.0
    tau: float = 0.1
    # L_LC also keeps each video's clip-to-clip changes: plus lc_motion times the MSE between
    # the anonymized and the encoder features' differences of consecutive clips (0: the
    # paper's L_LC). No labels: it keeps what moves, for tasks never trained.
    lc_motion: float = 0.0
    # The fraction of a batch's clips that L_LC's position term averages, the worst-kept ones
    # (1: every clip, the paper's L_LC). Below 1, a rare kind of clip (a fall among ordinary
    # actions) cannot be dropped for almost nothing; no labels.
    lc_tail: float = 1.0
    # Clip each anchor's NT-Xent term at ln(2N-1), the value at which its video can no longer
    # be told from the others (common.losses.privacy_budget_loss); the paper does not clip.
    cap_budget: bool = False
    # Subtract the batch mean of the static clips before NT-Xent's cosine (the same function).
    center_budget: bool = False
    # What the privacy budget's two views of a video are: two static clips (the paper), two
    # moving clips of one anonymized sequence, or both terms (common.training).
    budget_views: str = "static"
    # Negatives of an anchor: every other video of the batch (the paper), or only the other
    # videos of the SAME action, so that the budget removes what tells apart videos of one
    # action (who is in them, where) and not the action (common.losses).
    budget_negatives: str = "all"
    # Whiten the views over the batch before NT-Xent's cosine (common.losses): every direction
    # counts, as it does for an attacker. Needs anonymizer.bottleneck (the views are its code).
    whiten_budget: bool = False
    # How L_LC and L_B combine the batches of the seen tasks in a step: "tasks" = the mean over
    # tasks (each task's batch counts the same, however few videos it has); "videos" = every
    # video counts the same (a task's term weighted by its batch's videos).
    task_average: str = "tasks"
    # How L_B combines the seen tasks' budgets (each the mean over its own videos): averaged as
    # loss.task_average says ("average"), or summed ("sum"), so that every task's videos have
    # the budget's full weight, as they would if their task were the only one seen.
    budget_combine: str = "average"
    # Whose videos the privacy budget covers: the seen tasks named here (None: every seen
    # task's). L_LC and L_T still see every seen task's videos.
    budget_tasks: tuple[str, ...] | None = None
    # Before the joint step, take out of the tasks' gradient on the adapter its component
    # against the privacy budget's gradient, when they conflict (PCGrad, Yu et al. 2020), so
    # that no task buys its utility with leakage to first order (common.training).
    budget_surgery: bool = False
    # What the surgery projects: the tasks' gradient only ("tasks"; L_LC and a proximal term
    # step as in the joint step, at the cost of one more backward pass through the adapter),
    # or the gradient of the whole objective but the budget ("objective": L_T, L_LC and a
    # proximal term, which share the tasks' forward pass, so no more backward passes than the
    # joint step), or each seen task's term of L_T on its own ("each_task").
    budget_surgery_scope: str = "tasks"

    def __post_init__(self) -> None:
        _choice("loss.budget_surgery_scope", self.budget_surgery_scope, SURGERY_SCOPES)
        _choice("loss.budget_views", self.budget_views, BUDGET_VIEWS)
        _choice("loss.task_average", self.task_average, TASK_AVERAGES)
        _choice("loss.budget_combine", self.budget_combine, BUDGET_COMBINES)
        _choice("loss.budget_negatives", self.budget_negatives, BUDGET_NEGATIVES)
        if self.budget_tasks is not None:
            _task_names("loss.budget_tasks", dict.fromkeys(self.budget_tasks, 0.0))
        for name in ("w_lc", "w_t", "w_b", "lc_motion"):
            _at_least(f"loss.{name}", getattr(self, name), 0)
        _positive("loss.tau", self.tau)
        if not 0.0 < self.lc_tail <= 1.0:
            raise ConfigError(f"'loss.lc_tail' must be in (0, 1], not {self.lc_tail!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Local training at a site (or on pooled data in centralized mode)."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-4  # AAM
    head_lr: float = 1e-4  # task heads
    weight_decay: float = 0.01
    seed: int = 0
    # A seen task with fewer batches in an epoch than the task with the most: in every step,
    # its batches starting again ("repeat"), or each of its videos once per epoch, its
    # batches spread evenly over the epoch's steps ("once"; the other steps leave it out).
    task_schedule: str = "repeat"

    def __post_init__(self) -> None:
        _choice("train.task_schedule", self.task_schedule, TASK_SCHEDULES)
        _at_least("train.epochs", self.epochs, 1)
        _at_least("train.batch_size", self.batch_size, 2,
                  " (the privacy budget contrasts the videos of a batch)")  # fmt: skip
        _positive("train.lr", self.lr)
        _at_least("train.head_lr", self.head_lr, 0)
        _at_least("train.weight_decay", self.weight_decay, 0)


@dataclass(frozen=True)
class FederationConfig:
    """How sites are federated (see server.strategies)."""

    mode: str = "federated"  # federated | centralized
    strategy: str = "fedavg"
    rounds: int = 10
    fraction_train: float = 1.0
    proximal_mu: float = 0.0  # FedProx
    server_lr: float = 1.0  # FedAdam / FedYogi / FedAvgM
    server_momentum: float = 0.0  # FedAvgM
    trimmed_beta: float = 0.2  # FedTrimmedAvg
    num_malicious: int = 0  # Krum
    cpus_per_site: float = 1.0
    # Sites a round needs to go on (0 = every site): fewer lets a run carry on when sites drop
    # out; a round never waits longer than round_timeout seconds for replies.
    min_sites: int = 0
    round_timeout: float = 1800.0
    # Before round 1, how long the server waits for the sites to connect and to encode their
    # videos (each site encodes its own, once).
    prepare_timeout: float = 3600.0
    # Updates sent compressed (common.compression): none | fp16 | int8 | int8-channel.
    compression: str = "none"
    # Central differential privacy (Flower's client-side fixed clipping with its RDP
    # accountant) when dp_noise_multiplier > 0; dp_max_epsilon > 0 stops the run before a round
    # would spend more.
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0
    dp_delta: float = 1.0e-5
    dp_max_epsilon: float = 0.0

    def __post_init__(self) -> None:
        # The strategy's name is checked against server.strategies when a run starts.
        _choice("federation.mode", self.mode, FEDERATION_MODES)
        _at_least("federation.min_sites", self.min_sites, 0)
        _positive("federation.round_timeout", self.round_timeout)
        _positive("federation.prepare_timeout", self.prepare_timeout)
        _choice("federation.compression", self.compression, COMPRESSION_METHODS)
        _at_least("federation.dp_noise_multiplier", self.dp_noise_multiplier, 0)
        _positive("federation.dp_clipping_norm", self.dp_clipping_norm)
        if not 0 < self.dp_delta < 1:
            raise ConfigError(f"'federation.dp_delta' must be in (0, 1), not {self.dp_delta!r}")
        _at_least("federation.dp_max_epsilon", self.dp_max_epsilon, 0)
        if self.dp_noise_multiplier > 0 and self.strategy not in ("fedavg", "fedprox"):
            raise ConfigError(
                "differential privacy (federation.dp_noise_multiplier > 0) is accounted for "
                f"FedAvg's uniform mean only: federation.strategy fedavg or fedprox, not "
                f"{self.strategy!r}"
            )
        _at_least("federation.rounds", self.rounds, 1)
        if not 0 < self.fraction_train <= 1:
            raise ConfigError(
                f"'federation.fraction_train' is the share of sites sampled per round, in "
                f"(0, 1], not {self.fraction_train!r}"
            )
        _at_least("federation.proximal_mu", self.proximal_mu, 0)
        _positive("federation.server_lr", self.server_lr)
        if not 0 <= self.server_momentum < 1:
            raise ConfigError(
                f"'federation.server_momentum' must be in [0, 1), not {self.server_momentum!r}"
            )
        if not 0 <= self.trimmed_beta < 0.5:
            raise ConfigError(
                f"'federation.trimmed_beta' must be in [0, 0.5), not {self.trimmed_beta!r}"
            )
        _at_least("federation.num_malicious", self.num_malicious, 0)
        _positive("federation.cpus_per_site", self.cpus_per_site)


@dataclass(frozen=True)
class EvaluationConfig:
    """Central evaluation on the evaluation world (see server.evaluation)."""

    every: int = 1  # rounds between central evaluations (the last round is always evaluated)
    # The attacker suite (common.attackers); the privacy number is its worst case.
    attackers: tuple[str, ...] = ATTACKER_NAMES
    # Whose central videos the video privacy protocol attacks (tasks of common.tasks whose
    # videos carry their actors' attributes); the same set for every run keeps runs comparable.
    privacy_videos: tuple[str, ...] = ("ar",)
    # The bias protocol (common.bias) when the evaluation set has a bias set.
    bias: bool = True
    attacker_epochs: int = 400  # at most; attackers stop when val stops improving
    attacker_patience: int = 25  # epochs without a better val cMAP before an attacker stops
    attacker_lr: float = 1e-3
    probe_epochs: int = 100
    probe_lr: float = 1e-3
    # The AR probe's batch, in clips; it also caps the TAD and AD protocols' batches, which count
    # videos (common.tasks: TRAIN_VIDEOS_PER_BATCH).
    batch_size: int = 256
    # Which evaluated round the report gives and adapter.npz ships (server.selection):
    # "val" = the lowest worst-case VALIDATION privacy cMAP (video protocol) among rounds whose
    # every evaluated task's validation metric is within its allowed drop (tasks.evaluated) of
    # the raw features'; "last" = the last round.
    select: str = "val"
    # Which rounds the stills protocol (the paper's, reported beside the video headline) runs
    # on: "selected" = the raw features, the last round and the round the run ships (selection
    # reads the video protocol only); "evaluated" = every evaluated round, for its curve.
    stills: str = "selected"

    def __post_init__(self) -> None:
        _choice("evaluation.select", self.select, SELECT_RULES)
        _choice("evaluation.stills", self.stills, STILLS_ROUNDS)
        _at_least("evaluation.every", self.every, 1)
        for name in ("attacker_epochs", "attacker_patience", "probe_epochs", "batch_size"):
            _at_least(f"evaluation.{name}", getattr(self, name), 1)
        _positive("evaluation.attacker_lr", self.attacker_lr)
        _positive("evaluation.probe_lr", self.probe_lr)
        if not self.attackers:
            raise ConfigError("'evaluation.attackers' needs at least one attacker")
        for name in self.attackers:
            _choice("evaluation.attackers", name, ATTACKER_NAMES)
        _task_names("evaluation.privacy_videos", dict.fromkeys(self.privacy_videos, 0.0))


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic camera-site world (see simulations.world)."""

    preset: str = "default"  # tiny | default | large
    sites: int = 8
    seed: int = 0
    dirichlet_alpha: float = 0.3  # small = very skewed site mixes
    dir: str = ""  # where the world lives; empty = <run dir>/world

    def __post_init__(self) -> None:
        _choice("world.preset", self.preset, WORLD_PRESETS)
        _at_least("world.sites", self.sites, 1)
        _positive("world.dirichlet_alpha", self.dirichlet_alpha)


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    anonymizer: AnonymizerConfig = field(default_factory=AnonymizerConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.federation.min_sites > self.world.sites:
            raise ConfigError(
                f"'federation.min_sites' ({self.federation.min_sites}) cannot exceed the "
                f"number of sites, 'world.sites' ({self.world.sites})"
            )
        if self.anonymizer.init == "discriminant":
            if self.tasks.seen.get("ar", 0) <= 0:
                raise ConfigError(
                    "'anonymizer.init' discriminant is fitted to the sites' action labels and "
                    "its rule is the action head: 'tasks.seen' must train ar at a positive "
                    f"weight (it has {self.tasks.seen})"
                )
            if self.anonymizer.bottleneck > self.heads.num_actions - 1:
                raise ConfigError(
                    f"'anonymizer.init' discriminant: {self.heads.num_actions} actions give at "
                    f"most {self.heads.num_actions - 1} directions, but 'anonymizer.bottleneck' "
                    f"is {self.anonymizer.bottleneck}"
                )
        unseen = sorted(set(self.loss.budget_tasks or ()) - set(self.tasks.seen))
        if unseen:
            raise ConfigError(
                f"'loss.budget_tasks' names {', '.join(unseen)}, which 'tasks.seen' does not "
                f"train ({', '.join(self.tasks.seen)}): the budget covers only seen tasks' videos"
            )


# ---------------------------------------------------------------------------------------------
# Building configs from plain data


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# Keys that moved, with where they went (an old config gets told, not just refused).
MOVED_KEYS = {
    "heads.tasks": "tasks.seen (a mapping task: loss weight, e.g. {ar: 1.0})",
    "heads.num_attributes": "nothing (the attackers read the attribute count from the data)",
    "loss.w_ar": "tasks.seen.ar",
    "evaluation.max_val_ar_drop": "tasks.evaluated.ar",
}


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    if _join(where, key) in MOVED_KEYS:
        return ConfigError(
            f"config key '{_join(where, key)}' has moved to {MOVED_KEYS[_join(where, key)]}"
        )
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{_join(where, close[0])}'?" if close else ""
    return ConfigError(
        f"unknown config key '{_join(where, key)}'{hint} (valid here: {', '.join(valid)})"
    )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(value: Any, type_: Any, where: str) -> Any:
    """Coerce a YAML or command-line value to a schema type, or raise ConfigError."""
    origin = typing.get_origin(type_)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(type_)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is dict:
        key_type, value_type = typing.get_args(type_)
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' expects a mapping (e.g. {{ar: 1.0}}), got {value!r}")
        return {
            _coerce(k, key_type, where): _coerce(v, value_type, _join(where, str(k)))
            for k, v in value.items()
        }
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(type_)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{where}' expects a list, got {value!r}")
        return tuple(_coerce(v, item_type, where) for v in value)
    if type_ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        ):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"'{where}' expects true or false, got {value!r}")
    if type_ is int:
        if isinstance(value, bool):
            raise ConfigError(f"'{where}' expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"'{where}' expects an integer, got {value!r}")
    if type_ is float:
        if isinstance(value, bool):
            raise ConfigError(f"'{where}' expects a number, got {value!r}")
        number = None
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        what = "a finite number" if number is not None else "a number"
        raise ConfigError(f"'{where}' expects {what}, got {value!r}")
    if type_ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{where}' expects a string, got {value!r}")
    raise ConfigError(f"'{where}' has an unsupported type {type_!r}")


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass `cls` from nested plain data; unknown keys and wrong types are errors."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"'{where or 'config'}' expects a mapping, got {data!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise _unknown_key_error(str(key), list(types_), where)
        type_ = types_[key]
        if dataclasses.is_dataclass(type_):
            kwargs[key] = from_dict(type_, value, _join(where, key))
        else:
            kwargs[key] = _coerce(value, type_, _join(where, key))
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested data of a config (tuples become lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else plain(value)
    return out


def apply_overrides(
    data: dict[str, Any], overrides: list[str], cls: type = RunConfig
) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b=c` override set; keys are checked against `cls`."""
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    for override in overrides:
        if "=" not in override:
            raise ConfigError(
                f"override '{override}' is not of the form key=value (e.g. train.lr=3e-4)"
            )
        dotted, raw = override.split("=", 1)
        keys = dotted.strip().split(".")
        node_cls, node, where = cls, data, ""
        for depth, key in enumerate(keys):
            types_ = _field_types(node_cls)
            if key not in types_:
                raise _unknown_key_error(key, list(types_), where)
            is_leaf = depth == len(keys) - 1
            if typing.get_origin(types_[key]) is dict and depth == len(keys) - 2:
                # `tasks.seen.tad=0.5` sets one entry of a mapping (starting from the default
                # mapping); `tasks.seen.ar=null` removes one.
                entry = node.setdefault(key, dict(getattr(node_cls(), key)))
                if not isinstance(entry, dict):
                    raise ConfigError(f"'{_join(where, key)}' is not a mapping in this config")
                parsed = _override_value(override, raw)
                if parsed is None:
                    entry.pop(keys[-1], None)
                else:
                    entry[keys[-1]] = parsed
                break
            if dataclasses.is_dataclass(types_[key]):
                if is_leaf:
                    raise ConfigError(f"'{_join(where, key)}' is a section; set one of its keys")
                node = node.setdefault(key, {})
                node_cls = types_[key]
            elif not is_leaf:
                raise ConfigError(f"'{_join(where, key)}' is not a section; cannot set '{dotted}'")
            else:
                parsed = _override_value(override, raw)
                node[key] = raw if parsed is None and raw.strip() not in ("null", "~") else parsed
            where = _join(where, key)
    return data


def _override_value(override: str, raw: str) -> Any:
    """The YAML value of one `key=value` override ("" for an empty value)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"override '{override}': the value is not valid YAML ({yaml_problem(error)}); quote "
            "the whole --set argument in the shell, e.g. --set 'tasks.seen={ar: 1.0}'"
        ) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply `key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; give the YAML file itself")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text; is it a YAML file?") from None
        except yaml.YAMLError as error:
            raise ConfigError(
                f"config file {path} is not valid YAML: {yaml_problem(error)}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {path} holds a {type(data).__name__}, not a mapping of sections "
                "(encoder:, train:, federation:, ...)"
            )
    data = apply_overrides(data, list(overrides or []))
    return from_dict(RunConfig, data)


def yaml_problem(error: yaml.YAMLError) -> str:
    """What PyYAML found wrong, on one line with its line and column (its own message spans
    several lines and quotes the text)."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
