"""The privacy attacker suite: how much an adversary can read from the features a site releases.

Threat model (DESIGN.md decision 7, README "Threat model"): the attacker sees anonymized
features, knows the frozen encoder and the adapter (it is broadcast to every site), and so can
make labelled training data of its own: videos of people whose attributes it knows, passed
through the encoder and the adapter. Each attacker below trains on the train split, chooses its
hyper-parameters and its stopping point on the validation split only, and is then scored once
on the test split. The privacy number is the WORST case (highest cMAP) over the suite: a
defence is only as good as the best attack it was measured against.

    mlp            the paper's attacker, Linear(d, d) -> ReLU -> Linear(d, A), BCE, AdamW with
                   a plateau scheduler, trained until validation cMAP stops improving
    logistic       scikit-learn logistic regression per attribute, C chosen on val
    knn            k nearest neighbours (scikit-learn), k chosen on val per attribute
    boosted_trees  scikit-learn histogram gradient boosting per attribute, early-stopped on val
    inversion      knows the adapter: learns the map anonymized -> raw features on data it makes
                   itself (train pairs; ridge or an MLP, and the input normalisation,
                   chosen on val), then applies a
                   raw-feature attacker (logistic regression fitted on raw train features)

Every attacker also chooses its input normalisation on val: z-scoring with train statistics,
or each sample scaled to unit L2 norm first (for the trees, z-scoring is the features as they
are). An adapter that inflates the
norm of some outputs breaks z-scoring (a quarter of the stills of an early default run were
3-300x too long); it does not break the L2 variant, so scale cannot be the defence.

    results = run_attack_suite(AttackData(train, val, test), ("mlp", "logistic"))
    worst = worst_case(results)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import LatentveilError
from common.fitting import fit_selected_on_val
from common.metrics import (
    chance_cmap,
    class_mean_average_precision,
    per_attribute_average_precision,
)
from common.registry import Registry


class AttackError(LatentveilError):
    """Attack data that does not fit (shapes, labels, a missing raw view)."""


@dataclass(frozen=True)
class Split:
    """Features and labels of one split."""

    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class AttackData:
    """What the attacker is given: (N, d) features with (N, A) 0/1 attribute labels per split.

    `raw_train` / `raw_val` are the RAW features of the same train / val items: data the
    attacker can make itself since it knows the encoder and the adapter (only the inversion
    attacker uses them). `raw_test` is never given to an attacker; the evaluation uses it only
    to report how much of the raw features an inversion recovers (R^2).
    """

    train: Split
    val: Split
    test: Split
    raw_train: np.ndarray | None = None
    raw_val: np.ndarray | None = None
    raw_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        dims = {s.features.shape[-1] for s in (self.train, self.val, self.test)}
        for name, s in (("train", self.train), ("val", self.val), ("test", self.test)):
            if s.features.ndim != 2 or s.labels.ndim != 2 or len(s.features) != len(s.labels):
                raise AttackError(
                    f"{name}: features {s.features.shape} and labels {s.labels.shape} must be "
                    "(N, d) and (N, A) with the same N"
                )
        if len(dims) != 1:
            raise AttackError(f"train, val and test have different feature widths {sorted(dims)}")
        for name in ("train", "val", "test"):
            if not np.asarray(getattr(self, name).labels).any(axis=0).any():
                raise AttackError(f"the {name} split has no positive label of any attribute")


@dataclass(frozen=True)
class AttackResult:
    """One attacker's leakage (percentages): its test cMAP, the val cMAP that chose it, AP per
    attribute on test, and what it chose (hyper-parameters, stopping point) with its cost."""

    attacker: str
    test_cmap: float
    val_cmap: float
    chance_cmap: float
    per_attribute_ap: list[float | None]
    chosen: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (report.json's privacy_attackers entries)."""
        return {
            "test_cmap": self.test_cmap,
            "val_cmap": self.val_cmap,
            "per_attribute_ap": self.per_attribute_ap,
            "chosen": self.chosen,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class SuiteSettings:
    """Budgets of the suite (EvaluationConfig carries them in a run)."""

    max_epochs: int = 400  # MLP epochs at most; it stops when val has not improved for `patience`
    patience: int = 25
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0


# A scorer maps (N, d) features to (N, A) attribute scores (higher = more likely present).
Scorer = Callable[[np.ndarray], np.ndarray]
# An attacker fits on the data (train, selecting on val) and returns its scorer and choices.
AttackerFit = Callable[[AttackData, SuiteSettings, dict], tuple[Scorer, dict[str, Any]]]

ATTACKERS: Registry[AttackerFit] = Registry("attacker")

NORMALISATIONS = ("zscore", "l2")


# ---------------------------------------------------------------------------------------------
# Shared pieces


class Normaliser:
    """Input normalisation fitted on train: z-score, or unit L2 norm per sample then z-score."""

    def __init__(self, kind: str, train: np.ndarray) -> None:
        if kind not in NORMALISATIONS:
            raise AttackError(f"unknown normalisation {kind!r}; choose from {NORMALISATIONS}")
        self.kind = kind
        x = self._scaled(train)
        self.mean = x.mean(0)
        self.std = np.maximum(x.std(0), 1e-6)

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "l2":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((self._scaled(x) - self.mean) / self.std).astype(np.float32)


def _attribute_columns(labels: np.ndarray) -> list[int]:
    """Attributes with both classes in train (the others cannot be learned; scored constant)."""
    labels = np.asarray(labels)
    return [a for a in range(labels.shape[1]) if 0 < labels[:, a].sum() < len(labels)]


def _ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one column, or 0 where it has no positive (such a column does not count)."""
    labels = np.asarray(labels)
    if not labels.any():
        return 0.0
    return per_attribute_average_precision(scores[:, None], labels[:, None])[0] or 0.0


def _cmap(scores: np.ndarray, labels: np.ndarray) -> float:
    return class_mean_average_precision(scores, np.asarray(labels))


# ---------------------------------------------------------------------------------------------
# The attackers


@ATTACKERS.register("mlp")
def fit_mlp(data: AttackData, settings: SuiteSettings, cache: dict) -> tuple[Scorer, dict]:
    """The paper's attacker, trained until validation cMAP stops improving; the input
    normalisation is chosen on val."""
    best: tuple[float, Scorer, dict] | None = None
    for kind in NORMALISATIONS:
        norm = Normaliser(kind, data.train.features)
        model, val_cmap, epoch, stopped = _train_mlp(
            norm(data.train.features), data.train.labels,
            norm(data.val.features), data.val.labels, settings,
        )  # fmt: skip
        if best is None or val_cmap > best[0]:
            scorer = _mlp_scorer(model, norm)
            chosen = {"normalisation": kind, "best_epoch": epoch, "epochs_run": stopped}
            best = (val_cmap, scorer, chosen)
    return best[1], best[2]


def _mlp_scorer(model: nn.Module, norm: Normaliser) -> Scorer:
    def score(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(norm(x))).numpy()

    return score


def _train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    settings: SuiteSettings,
) -> tuple[nn.Module, float, int, int]:
    """The paper's MLP with a plateau scheduler, stopped when val cMAP has not improved for
    `patience` epochs; the best epoch's weights are kept. Returns (model, val cMAP, best epoch,
    epochs run)."""
    x = torch.from_numpy(x_train)
    y = torch.as_tensor(y_train, dtype=torch.float32)
    xv = torch.from_numpy(x_val)
    d, a = x.shape[1], y.shape[1]
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, a))

    def validate() -> float:
        with torch.no_grad():
            return _cmap(model(xv).numpy(), y_val)

    fit = fit_selected_on_val(
        model, F.binary_cross_entropy_with_logits, x, y, validate,
        settings.max_epochs, settings.lr, settings.batch_size, settings.seed,
        plateau=True, patience=settings.patience,
    )  # fmt: skip
    return model, fit.best_score, fit.best_epoch, fit.epochs_run


LOGISTIC_C = (0.003, 0.03, 0.3, 3.0)


@ATTACKERS.register("logistic")
def fit_logistic(data: AttackData, settings: SuiteSettings, cache: dict) -> tuple[Scorer, dict]:
    """One L2-regularised logistic regression per attribute; normalisation and C per attribute
    chosen on val AP."""
    models, chosen = _fit_logistic(data.train, data.val, settings.seed)
    return _per_attribute_scorer(models, data.train.labels.shape[1]), chosen


def _fit_logistic(train: Split, val: Split, seed: int) -> tuple[dict[int, Any], dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    normalisers, inputs = _normalised_inputs(train.features, val.features)
    models: dict[int, Any] = {}
    chosen: dict[str, Any] = {}
    for a in _attribute_columns(train.labels):
        best = None
        for kind, (x_train, x_val) in inputs.items():
            for c in LOGISTIC_C:
                model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(x_train, train.labels[:, a])
                ap = _ap(model.decision_function(x_val), val.labels[:, a])
                if best is None or ap > best[0]:
                    best = (ap, model, kind, c)
        _, model, kind, c = best
        models[a] = _Normalised(normalisers[kind], model.decision_function)
        chosen[str(a)] = {"normalisation": kind, "C": c}
    return models, chosen


def _normalised_inputs(
    train: np.ndarray, val: np.ndarray
) -> tuple[dict[str, Normaliser], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Each normalisation of NORMALISATIONS fitted on `train`, and (train, val) under it: what an
    attacker that chooses its normalisation on val tries."""
    normalisers = {kind: Normaliser(kind, train) for kind in NORMALISATIONS}
    return normalisers, {k: (n(train), n(val)) for k, n in normalisers.items()}


class _Normalised:
    """A per-attribute scoring function behind its input normalisation."""

    def __init__(self, norm: Normaliser, score: Callable[[np.ndarray], np.ndarray]) -> None:
        self.norm, self.score = norm, score

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.score(self.norm(x))


def _per_attribute_scorer(models: dict[int, Callable], num_attributes: int) -> Scorer:
    def score(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), num_attributes))
        for a, model in models.items():
            out[:, a] = model(x)
        return out

    return score


KNN_K = (5, 15, 45)


@ATTACKERS.register("knn")
def fit_knn(data: AttackData, settings: SuiteSettings, cache: dict) -> tuple[Scorer, dict]:
    """k nearest neighbours in the normalised space; a score is the distance-weighted share of
    neighbours with the attribute. Normalisation and k chosen on val per attribute."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(data.train.labels, dtype=np.float64)
    ks = tuple(k for k in KNN_K if k <= len(labels)) or (len(labels),)  # small train splits
    k_max = max(ks)
    fitted = {}
    for kind in NORMALISATIONS:
        norm = Normaliser(kind, data.train.features)
        index = NearestNeighbors(n_neighbors=k_max).fit(norm(data.train.features))
        fitted[kind] = (norm, index)

    def votes(kind: str, x: np.ndarray, k: int) -> np.ndarray:
        norm, index = fitted[kind]
        distance, neighbours = index.kneighbors(norm(x), n_neighbors=k)
        weight = 1.0 / (distance + 1e-6)  # (N, k)
        return np.einsum("nk,nka->na", weight, labels[neighbours]) / weight.sum(1, keepdims=True)

    val_votes = {(kind, k): votes(kind, data.val.features, k) for kind in fitted for k in ks}
    choice: dict[int, tuple[str, int]] = {}
    for a in _attribute_columns(labels):
        choice[a] = max(val_votes, key=lambda key: _ap(val_votes[key][:, a], data.val.labels[:, a]))

    def score(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), labels.shape[1]))
        for key in set(choice.values()):
            v = votes(key[0], x, key[1])
            for a, chosen_key in choice.items():
                if chosen_key == key:
                    out[:, a] = v[:, a]
        return out

    return score, {str(a): {"normalisation": c[0], "k": c[1]} for a, c in choice.items()}


@ATTACKERS.register("boosted_trees")
def fit_boosted_trees(data: AttackData, settings: SuiteSettings, cache: dict):
    """Histogram gradient boosting per attribute (scikit-learn), early-stopped on the val
    split's loss; the input normalisation chosen on val AP per attribute. Trees split on single
    features, so z-scoring changes nothing (it stands for the features as they are); scaling
    each sample to unit L2 norm does: what a ratio of features tells, a single split cannot
    (on the released features of stop 35's runs, 1.2-1.3 cMAP points more on test)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    normalisers, inputs = _normalised_inputs(data.train.features, data.val.features)
    models: dict[int, Callable] = {}
    chosen: dict[str, Any] = {}
    for a in _attribute_columns(data.train.labels):
        best = None
        y_train, y_val = data.train.labels[:, a], data.val.labels[:, a]
        for kind, (x_train, x_val) in inputs.items():
            model = HistGradientBoostingClassifier(
                learning_rate=0.1,
                max_iter=400,
                max_leaf_nodes=15,
                early_stopping=True,
                n_iter_no_change=15,
                random_state=settings.seed,
            )
            model.fit(x_train, y_train.astype(int), X_val=x_val, y_val=y_val.astype(int))
            ap = _ap(model.decision_function(x_val), y_val)
            if best is None or ap > best[0]:
                best = (ap, model, kind)
        _, model, kind = best
        models[a] = _Normalised(normalisers[kind], model.decision_function)
        chosen[str(a)] = {"normalisation": kind, "iterations": int(model.n_iter_)}
    return _per_attribute_scorer(models, data.train.labels.shape[1]), chosen


RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0)


@ATTACKERS.register("inversion")
def fit_inversion(data: AttackData, settings: SuiteSettings, cache: dict):
    """An attacker that knows the adapter: it maps anonymized features back to raw ones with a
    model fitted on (anonymized, raw) pairs it made itself (the train split; ridge regression
    or an MLP, whichever gives the raw-feature attacker the higher val cMAP), then reads the
    attributes with logistic regression fitted on raw train features (cached across rounds:
    raw features do not change)."""
    if data.raw_train is None or data.raw_val is None:
        raise AttackError("the inversion attacker needs the raw features of the train/val items")
    key = ("raw_logistic", data.raw_train.shape, float(np.sum(data.raw_train[:64])))
    if key not in cache:
        cache[key] = _fit_logistic(
            Split(data.raw_train, data.train.labels), Split(data.raw_val, data.val.labels),
            settings.seed,
        )  # fmt: skip
    raw_models, _ = cache[key]
    raw_scorer = _per_attribute_scorer(raw_models, data.train.labels.shape[1])

    if _released_raw(data):
        # Nothing to invert (the raw-feature baseline): the identity is the exact inverse, and
        # no fitted map could read more than the raw-feature reader does on the raw features.
        best = (None, "identity", lambda x: x, {})
    else:
        best = None
    for kind in NORMALISATIONS if best is None else ():
        norm_in = Normaliser(kind, data.train.features)
        inverses = {
            "ridge": _fit_ridge_inverse(data, norm_in),
            "mlp": _fit_mlp_inverse(data, norm_in, settings),
        }
        for name, (inverse, detail) in inverses.items():
            val_cmap = _cmap(raw_scorer(inverse(data.val.features)), data.val.labels)
            if best is None or val_cmap > best[0]:
                best = (val_cmap, name, inverse, detail | {"normalisation": kind})
    _, name, inverse, detail = best

    def score(x: np.ndarray) -> np.ndarray:
        return raw_scorer(inverse(x))

    chosen = {"inverse": name, **detail}
    if data.raw_test is not None:
        dkey = ("directions", *key[1:])
        if dkey not in cache:
            cache[dkey] = attribute_directions(data.raw_train, data.train.labels, settings.seed)
        chosen |= reconstruction_r2(
            inverse(data.test.features), data.raw_test, data.raw_train, cache[dkey]
        )
    return score, chosen


def _released_raw(data: AttackData) -> bool:
    """Whether the attacked features are the raw ones themselves, in every split."""
    pairs = ((data.train.features, data.raw_train), (data.val.features, data.raw_val))
    if data.raw_test is not None:
        pairs += ((data.test.features, data.raw_test),)
    return all(a.shape == b.shape and np.array_equal(a, b) for a, b in pairs)


def _fit_ridge_inverse(
    data: AttackData, norm_in: Normaliser
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """Ridge regression anonymized -> raw (inputs normalised by `norm_in`, raw targets z-scored
    with train statistics); alpha chosen on val reconstruction error."""
    x, xv = norm_in(data.train.features).astype(np.float64), norm_in(data.val.features)
    y_mean, y_std = data.raw_train.mean(0), np.maximum(data.raw_train.std(0), 1e-6)
    y = (data.raw_train - y_mean) / y_std
    yv = (data.raw_val - y_mean) / y_std
    gram, cross = x.T @ x, x.T @ y
    best = None
    for alpha in RIDGE_ALPHA:
        weights = np.linalg.solve(gram + alpha * len(x) * 1e-2 * np.eye(len(gram)), cross)
        error = float(np.mean((xv @ weights - yv) ** 2))
        if best is None or error < best[0]:
            best = (error, alpha, weights)
    _, alpha, weights = best

    def inverse(features: np.ndarray) -> np.ndarray:
        return norm_in(features) @ weights * y_std + y_mean

    return inverse, {"alpha": alpha}


class _ResidualInverse(nn.Module):
    """anonymized -> raw: a linear map plus an MLP correction."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.hidden(x)


def _fit_mlp_inverse(
    data: AttackData, norm_in: Normaliser, settings: SuiteSettings
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """A residual MLP anonymized -> raw, MSE, stopped when val error stops improving."""
    y_mean, y_std = data.raw_train.mean(0), np.maximum(data.raw_train.std(0), 1e-6)
    x = torch.from_numpy(norm_in(data.train.features))
    y = torch.from_numpy(((data.raw_train - y_mean) / y_std).astype(np.float32))
    xv = torch.from_numpy(norm_in(data.val.features))
    yv = torch.from_numpy(((data.raw_val - y_mean) / y_std).astype(np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = _ResidualInverse(x.shape[1])

    def validate() -> float:  # higher is better: minus the val reconstruction error
        with torch.no_grad():
            return -float(F.mse_loss(model(xv), yv))

    fit = fit_selected_on_val(
        model, F.mse_loss, x, y, validate,
        settings.max_epochs, settings.lr, settings.batch_size, settings.seed,
        patience=settings.patience, weight_decay=1e-4,
    )  # fmt: skip

    def inverse(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(norm_in(features))).numpy()
        return out * y_std + y_mean

    return inverse, {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run}


def attribute_directions(raw_train: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The attribute-bearing directions of raw features: one logistic regression per attribute
    on z-scored raw train features, its weight vectors orthonormalised -> (d, A')."""
    from sklearn.linear_model import LogisticRegression

    x = Normaliser("zscore", raw_train)(raw_train)
    weights = []
    for a in _attribute_columns(labels):
        model = LogisticRegression(C=0.3, max_iter=2000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x, np.asarray(labels)[:, a])
        weights.append(model.coef_.ravel())
    basis, _ = np.linalg.qr(np.stack(weights, axis=1))
    return basis


def reconstruction_r2(
    reconstructed: np.ndarray,
    raw: np.ndarray,
    raw_train: np.ndarray,
    directions: np.ndarray | None = None,
) -> dict[str, float]:
    """How much of the raw features an inversion recovers, as R^2 (1 = all, 0 = no better than
    the mean): over all feature dimensions (z-scored with train statistics), and along the
    attribute-bearing `directions` (d, A') of z-scored raw space when given."""
    mean, std = raw_train.mean(0), np.maximum(raw_train.std(0), 1e-6)
    target, estimate = (raw - mean) / std, (reconstructed - mean) / std

    def r2(t: np.ndarray, e: np.ndarray) -> float:
        return float(1.0 - np.sum((t - e) ** 2) / max(np.sum((t - t.mean(0)) ** 2), 1e-12))

    out = {"r2": r2(target, estimate)}
    if directions is not None:
        out["r2_attribute_directions"] = r2(target @ directions, estimate @ directions)
    return out


# ---------------------------------------------------------------------------------------------
# Running the suite


def run_attacker(
    name: str, data: AttackData, settings: SuiteSettings | None = None, cache: dict | None = None
) -> AttackResult:
    """Fit attacker `name` (train, selecting on val) and score it on val and test."""
    return run_attacker_on(name, data, {"test": data.test}, settings, cache)["test"]


def run_attacker_on(
    name: str,
    data: AttackData,
    tests: Mapping[str, Split],
    settings: SuiteSettings | None = None,
    cache: dict | None = None,
) -> dict[str, AttackResult]:
    """Fit attacker `name` once (train, selecting on val) and score it on val and on each of
    `tests` (`data.test` is read only through `data.raw_test`, for the inversion's R^2)."""
    settings = settings or SuiteSettings()
    started = time.perf_counter()
    fit = ATTACKERS.get(name)
    with torch.random.fork_rng():
        scorer, chosen = fit(data, settings, {} if cache is None else cache)
    val_cmap = _cmap(scorer(data.val.features), data.val.labels)
    results = {}
    for test_name, test in tests.items():
        scores = scorer(test.features)
        results[test_name] = AttackResult(
            attacker=name,
            test_cmap=_cmap(scores, test.labels),
            val_cmap=val_cmap,
            chance_cmap=chance_cmap(test.labels),
            per_attribute_ap=per_attribute_average_precision(scores, np.asarray(test.labels)),
            chosen=chosen,
            seconds=time.perf_counter() - started,
        )
    return results


def run_attack_suite(
    data: AttackData,
    attackers: tuple[str, ...],
    settings: SuiteSettings | None = None,
    cache: dict | None = None,
) -> dict[str, AttackResult]:
    """Every attacker in `attackers` on the same data; results keyed by attacker name."""
    return {name: run_attacker(name, data, settings, cache) for name in attackers}


def worst_case(results: dict[str, AttackResult]) -> dict[str, Any]:
    """The suite's worst case: the highest test cMAP (the privacy number), the highest val cMAP
    (what model selection may use; the test split never chooses anything), which attackers
    reached them, and the worst attacker's AP per attribute."""
    if not results:
        raise AttackError("the attacker suite is empty")
    worst = max(results.values(), key=lambda r: r.test_cmap)
    worst_val = max(results.values(), key=lambda r: r.val_cmap)
    return {
        "cmap": worst.test_cmap,
        "attacker": worst.attacker,
        "val_cmap": worst_val.val_cmap,
        "val_attacker": worst_val.attacker,
        "chance_cmap": worst.chance_cmap,
        "per_attribute_ap": worst.per_attribute_ap,
    }
