"""A closed-form anonymizer: the linear discriminant projection of the sites' action-labelled
clips.

The released features are the encoder's, projected onto the K <= C - 1 directions along which
the C actions differ most relative to how the clips of one action vary (Fisher's linear
discriminant, with the within-action covariance shrunk towards a multiple of the identity):

    z = mu + U U^T (x - mu)        U: an orthonormal basis of the K discriminant directions

What varies between clips of one action (who is in them, what they wear, where) is what the
projection discards first; what tells actions apart is what it keeps. It is an
AnonymizingAdapter with no blocks and a rank-K output (`anonymizer.layers` 0,
`anonymizer.bottleneck` K), so it ships, exports and is attacked like any trained adapter.

Everything the fit needs is a sum over clips (`ClassMoments`): per action the clip count and
the sum of the clips' features, and the sum of their outer products. A site's moments add to
another's, so the pooled fit is the fit of the sum of the sites' moments, which one federated
round of sums would deliver. The clips are those that show one action, from every task whose
labels name actions (`Task.action_clips`): each action video's clips, and each TAD video's
clips inside a labelled segment.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from common.errors import LatentveilError
from common.tasks import get_task

if TYPE_CHECKING:
    from common.config import RunConfig


class DiscriminantError(LatentveilError):
    """Moments that cannot give the requested projection."""


@dataclass(frozen=True)
class ClassMoments:
    """Sums over clips, in float64: `counts` (C,) clips per class, `sums` (C, d) their
    features' sums, `second` (d, d) the sum of x x^T over every clip."""

    counts: np.ndarray
    sums: np.ndarray
    second: np.ndarray

    @classmethod
    def of_labelled(
        cls, features: np.ndarray, labels: np.ndarray, num_classes: int
    ) -> ClassMoments:
        """The moments of clip features (M, d) with integer class `labels` (M,)."""
        if features.ndim != 2 or labels.shape != features.shape[:1]:
            raise DiscriminantError(
                f"features must be (M, d) with one label per clip; got features "
                f"{tuple(features.shape)} and labels {tuple(labels.shape)}"
            )
        if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise DiscriminantError(
                f"labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}"
            )
        x = features.astype(np.float64)
        y = labels.astype(np.int64)
        sums = np.zeros((num_classes, x.shape[1]))
        np.add.at(sums, y, x)
        return cls(np.bincount(y, minlength=num_classes).astype(np.float64), sums, x.T @ x)

    @classmethod
    def of_clips(cls, clips: np.ndarray, labels: np.ndarray, num_classes: int) -> ClassMoments:
        """The moments of (N, T, d) clip sequences whose videos have integer `labels` (N,);
        every clip of a video counts with its video's class."""
        if clips.ndim != 3 or labels.shape != clips.shape[:1]:
            raise DiscriminantError(
                f"clips must be (N, T, d) with one label per video; got clips "
                f"{tuple(clips.shape)} and labels {tuple(labels.shape)}"
            )
        return cls.of_labelled(
            clips.reshape(-1, clips.shape[-1]), np.repeat(labels, clips.shape[1]), num_classes
        )

    @classmethod
    def of_tasks(cls, data: Mapping[str, Any], num_classes: int) -> ClassMoments | None:
        """The moments of one split of a site's videos, task name -> common.sitedata's
        TaskArrays or TaskTensors: every clip that shows one action, under that action, from
        each task whose labels name actions (`Task.action_clips`: AR's every clip, TAD's clips
        inside a segment). None if no task of `data` names an action."""
        parts = cls.per_task(data, num_classes).values()
        return functools.reduce(operator.add, parts) if parts else None

    @classmethod
    def per_task(cls, data: Mapping[str, Any], num_classes: int) -> dict[str, ClassMoments]:
        """`of_tasks`, task by task: only the tasks whose labels name actions."""
        out = {}
        for name, videos in data.items():
            labels = {key: np.asarray(value) for key, value in videos.labels.items()}
            clips = get_task(name).action_clips(np.asarray(videos.clip_features), labels)
            if clips is not None:
                out[name] = cls.of_labelled(*clips, num_classes)
        return out

    def __add__(self, other: ClassMoments) -> ClassMoments:
        if self.sums.shape != other.sums.shape:
            raise DiscriminantError(
                f"moments of {self.sums.shape} and {other.sums.shape} (classes, dim) do not add"
            )
        return ClassMoments(
            self.counts + other.counts, self.sums + other.sums, self.second + other.second
        )


@dataclass(frozen=True)
class Discriminant:
    """A fitted projection: `mean` (d,) of every clip, `directions` (d, K) scaled so that the
    shrunk within-class covariance is the identity along them (the best first), their
    `ratios` (K,) of between- to within-class variance, and the class means (C, d) and priors
    (C,) that the action head reads."""

    mean: np.ndarray
    directions: np.ndarray
    ratios: np.ndarray
    class_means: np.ndarray
    priors: np.ndarray

    def basis(self) -> np.ndarray:
        """An orthonormal basis (d, K) of the directions' span."""
        q, _ = np.linalg.qr(self.directions)
        return q

    def adapter_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of an AnonymizingAdapter with no blocks and bottleneck K (float32)."""
        u = self.basis()
        return {
            "adapter.bottleneck.0.weight": u.T.astype(np.float32),  # (K, d)
            "adapter.bottleneck.1.weight": u.astype(np.float32),  # (d, K)
            "adapter.bottleneck.1.bias": (self.mean - u @ (u.T @ self.mean)).astype(np.float32),
        }

    def shareable_arrays(self) -> dict[str, np.ndarray]:
        """The adapter's arrays and the action head's: what the fit puts into a model."""
        return {**self.adapter_arrays(), **self.head_arrays()}

    def head_arrays(self, prefix: str = "heads.ar.classifier") -> dict[str, np.ndarray]:
        """A linear action head on released features: the discriminant's own rule, nearest
        class mean in the whitened directions with the class priors."""
        codes = self.class_means @ self.directions  # (C, K)
        with np.errstate(divide="ignore"):
            log_priors = np.log(self.priors)
        bias = -0.5 * (codes**2).sum(1) + np.maximum(log_priors, -1e4)
        return {
            f"{prefix}.weight": (codes @ self.directions.T).astype(np.float32),  # (C, d)
            f"{prefix}.bias": bias.astype(np.float32),
        }


def trained_tasks(config: RunConfig) -> tuple[str, ...]:
    """The tasks whose labels the fit reads: those the run trains at a positive weight in
    `tasks.seen` (a task at weight 0 lends its footage to L_LC, never its labels)."""
    return tuple(name for name, weight in config.tasks.seen.items() if weight > 0)


def trained_moments(config: RunConfig, data: Mapping[str, Any]) -> ClassMoments | None:
    """The moments a site (or the pool) contributes: of its videos (task name -> TaskArrays
    or TaskTensors) of the `trained_tasks`. None if none of them names an action."""
    trained = {name: videos for name, videos in data.items() if name in trained_tasks(config)}
    return ClassMoments.of_tasks(trained, config.heads.num_actions)


def fit_discriminant(moments: ClassMoments, directions: int, shrinkage: float) -> Discriminant:
    """Fisher's discriminant of the pooled `moments`: the `directions` leading solutions of
    S_b v = l S_w v, S_w shrunk to (1 - shrinkage) S_w + shrinkage tr(S_w)/d I (scikit-learn's
    `shrunk_covariance`). S_w is the within-class covariance (divided by clips - classes), S_b
    the between-class scatter of the class means (weighted by their clips, divided by clips)."""
    counts, sums, second = moments.counts, moments.sums, moments.second
    present = counts > 0
    num_present = int(present.sum())
    if not 0 <= shrinkage <= 1:
        raise DiscriminantError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
    if num_present < 2:
        raise DiscriminantError("the clips show fewer than 2 classes: nothing to discriminate")
    if not 1 <= directions <= num_present - 1:
        raise DiscriminantError(
            f"{num_present} classes give at most {num_present - 1} discriminant directions; "
            f"asked for {directions}"
        )
    total = counts.sum()
    if total <= num_present:
        raise DiscriminantError(f"{int(total)} clips of {num_present} classes: too few to fit")
    d = second.shape[0]
    class_means = np.where(present[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
    mean = sums.sum(0) / total
    outer_means = (counts[:, None, None] * class_means[:, :, None] * class_means[:, None, :]).sum(0)
    within = (second - outer_means) / (total - num_present)
    within = (within + within.T) / 2
    within = (1 - shrinkage) * within + shrinkage * np.trace(within) / d * np.eye(d)
    offsets = class_means[present] - mean
    between = (counts[present, None] * offsets).T @ offsets / total
    try:
        ratios, vectors = scipy.linalg.eigh(between, within)
    except np.linalg.LinAlgError as error:
        raise DiscriminantError(
            f"the within-class covariance is singular ({error}); use a shrinkage above 0"
        ) from error
    order = np.argsort(ratios)[::-1][:directions]
    return Discriminant(
        mean=mean,
        directions=np.ascontiguousarray(vectors[:, order]),
        ratios=ratios[order],
        class_means=class_means,
        priors=counts / total,
    )


# ---------------------------------------------------------------------------------------------
# On the wire: what the server asks each site for, and what it accepts back

MOMENTS_RECORD = "moments"  # the name of the ArrayRecord of a query and of its reply


def moments_template(num_classes: int, dim: int) -> dict[str, np.ndarray]:
    """Zeros of the moments' names and shapes: the server sends them with its query, so the
    site's wire audit knows which arrays may go back (its allow-list is what it received)."""
    return {
        "moments.counts": np.zeros(num_classes),
        "moments.sums": np.zeros((num_classes, dim)),
        "moments.second": np.zeros((dim, dim)),
    }


def moments_arrays(moments: ClassMoments) -> dict[str, np.ndarray]:
    """A site's moments under the template's names."""
    return {
        "moments.counts": moments.counts,
        "moments.sums": moments.sums,
        "moments.second": moments.second,
    }


def moments_from_arrays(
    arrays: dict[str, np.ndarray], template: dict[str, np.ndarray]
) -> ClassMoments:
    """A site's reply as moments, screened against the `template` it was asked with: the same
    names and shapes, finite values, whole non-negative counts, a symmetric second moment
    whose diagonal is not negative. Anything else is a DiscriminantError naming the fault."""
    if set(arrays) != set(template):
        raise DiscriminantError(
            f"the moments hold {sorted(arrays)}, not the {sorted(template)} asked for"
        )
    values = {}
    for name, expected in template.items():
        value = np.asarray(arrays[name])
        if value.shape != expected.shape:
            raise DiscriminantError(
                f"{name} has shape {value.shape}, not the {expected.shape} asked for"
            )
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise DiscriminantError(f"{name} holds values that are not finite numbers")
        values[name] = value.astype(np.float64)
    counts, second = values["moments.counts"], values["moments.second"]
    if (counts < 0).any() or (counts != np.round(counts)).any():
        raise DiscriminantError("moments.counts must be whole numbers of clips, not negative")
    scale = max(1.0, float(np.abs(second).max()))
    if np.abs(second - second.T).max() > 1e-6 * scale or (np.diag(second) < 0).any():
        raise DiscriminantError("moments.second is not a sum of outer products (x x^T)")
    return ClassMoments(counts, values["moments.sums"], second)


def with_discriminant(arrays: dict[str, np.ndarray], fit: Discriminant) -> dict[str, np.ndarray]:
    """Shareable arrays whose output bottleneck is `fit`'s projection and whose action head is
    its rule; every other array as given (the blocks at their identity start)."""
    replaced = fit.shareable_arrays()
    for name, value in replaced.items():
        if name not in arrays or arrays[name].shape != value.shape:
            shape = arrays[name].shape if name in arrays else "absent"
            raise DiscriminantError(
                f"the adapter's {name} ({shape}) cannot hold the projection ({value.shape}): "
                "'anonymizer.bottleneck' must equal the directions fitted"
            )
    return {**arrays, **{k: v.astype(arrays[k].dtype) for k, v in replaced.items()}}
