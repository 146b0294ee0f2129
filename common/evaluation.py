"""Evaluation protocols on (anonymized) features: the privacy attacker and the linear AR probe.

Both train a fresh model from scratch on the train split, select it on the validation split and
report the test split only for the selected model (the paper reports the best test value over
training; we never look at test to choose). Inputs are standardised with train-split statistics,
the same procedure for raw and anonymized features.

- privacy: the paper's attacker Linear(d, d) -> ReLU -> Linear(d, A) on static-clip features,
  BCE, AdamW, plateau scheduler; cMAP on test.
- action recognition: a linear classifier on clip features (each clip labelled with its video's
  action); a video's score averages the logits of its evenly spaced evaluation clips; top-1.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.atomic import atomic_path
from common.config import EvaluationConfig, HeadsConfig
from common.errors import LatentveilError
from common.heads import PrivacyAttacker
from common.metrics import (
    accuracy_standard_error,
    chance_cmap,
    class_mean_average_precision,
    per_attribute_average_precision,
    top1_accuracy,
)


@dataclass(frozen=True)
class Split:
    """Features and labels of one split. For AR, `features` is (N, n_clips, d)."""

    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class AttackerResult:
    """Privacy leakage measured by the attacker protocol (percentages)."""

    test_cmap: float
    val_cmap: float
    chance_cmap: float
    best_epoch: int
    per_attribute_ap: list[float | None]


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


def _fit_selected_on_val(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    validate: Callable[[], float],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    plateau: bool,
) -> tuple[float, int]:
    """Minibatch AdamW for `epochs`; after each epoch `validate()` scores the model on the
    validation split and the best epoch's weights are restored at the end. With `plateau`, the
    learning rate halves when validation stalls for 5 epochs. Returns (best score, epoch)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=5)
        if plateau
        else None
    )
    best_val, best_epoch, best_state = -1.0, -1, None
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = loss_fn(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        score = validate()
        if scheduler is not None:
            scheduler.step(score)
        if score > best_val:
            best_val, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_val, best_epoch


def run_attacker(
    train: Split,
    val: Split,
    test: Split,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> AttackerResult:
    """Train the attacker on static-clip features (N, d) with 0/1 attribute labels (N, A)."""
    mean, std = _standardizer(train.features)
    x_train, x_val, x_test = (_to_tensor(s.features, mean, std) for s in (train, val, test))
    y_train = torch.as_tensor(train.labels, dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        attacker = PrivacyAttacker(x_train.shape[1], HeadsConfig(num_attributes=y_train.shape[1]))

    def scores(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return attacker(x).numpy()

    best_val, best_epoch = _fit_selected_on_val(
        attacker,
        F.binary_cross_entropy_with_logits,
        x_train,
        y_train,
        lambda: class_mean_average_precision(scores(x_val), val.labels),
        epochs, lr, batch_size, seed, plateau=True,
    )  # fmt: skip
    test_scores = scores(x_test)
    return AttackerResult(
        test_cmap=class_mean_average_precision(test_scores, test.labels),
        val_cmap=best_val,
        chance_cmap=chance_cmap(test.labels),
        best_epoch=best_epoch,
        per_attribute_ap=per_attribute_average_precision(test_scores, np.asarray(test.labels)),
    )


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

    best_val, best_epoch = _fit_selected_on_val(
        probe,
        F.cross_entropy,
        x_train,
        y_train,
        lambda: top1_accuracy(video_logits(x_val), val.labels),
        epochs, lr, batch_size, seed, plateau=False,
    )  # fmt: skip
    test_top1 = top1_accuracy(video_logits(x_test), test.labels)
    return ProbeResult(
        test_top1=test_top1,
        test_top1_se=accuracy_standard_error(test_top1, len(test.labels)),
        val_top1=best_val,
        best_epoch=best_epoch,
        num_test=len(test.labels),
    )


# ---------------------------------------------------------------------------------------------
# The central evaluation set and the full leakage / utility measurement


# The evaluation set's file name in a run folder (written by simulations, read by the server).
EVALUATION_SET_FILE = "evaluation_set.npz"


@dataclass(frozen=True)
class EvaluationSet:
    """Cached raw features and labels of the central evaluation world.

    privacy[split]: static-clip features (N, d) with 0/1 attribute labels (N, A);
    ar[split]: evaluation-clip features (N, E, d) with action labels (N,).
    """

    encoder_id: str
    attributes: tuple[str, ...]
    actions: tuple[str, ...]
    privacy: dict[str, Split]
    ar: dict[str, Split]

    def save(self, path: str | Path) -> None:
        """Write as one .npz, atomically."""
        arrays = {"meta": np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)}
        for task in ("privacy", "ar"):
            for split, data in getattr(self, task).items():
                arrays[f"{task}/{split}/features"] = data.features
                arrays[f"{task}/{split}/labels"] = data.labels
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def _meta(self) -> dict[str, Any]:
        return {
            "encoder_id": self.encoder_id,
            "attributes": self.attributes,
            "actions": self.actions,
        }

    @classmethod
    def load(cls, path: str | Path) -> EvaluationSet:
        """Read a set written by `save`; a missing or malformed file is a clear error."""
        path = Path(path)
        if not path.is_file():
            raise EvaluationError(f"evaluation set not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                tasks: dict[str, dict[str, Split]] = {"privacy": {}, "ar": {}}
                for key in data.files:
                    if key.endswith("/features"):
                        task, split, _ = key.split("/")
                        tasks[task][split] = Split(data[key], data[f"{task}/{split}/labels"])
        except (OSError, ValueError, KeyError) as error:
            raise EvaluationError(f"{path} is not a latentveil evaluation set: {error}") from error
        return cls(meta["encoder_id"], tuple(meta["attributes"]), tuple(meta["actions"]), **tasks)


class EvaluationError(LatentveilError):
    """An evaluation set that is missing or does not fit."""


def anonymize_features(
    adapter: nn.Module | None, features: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Apply the AAM to cached features, each clip as its own length-1 sequence.

    (N, d) or (N, E, d) in, the same shape out. None (no adapter) returns the raw features:
    the baseline is the same protocol on raw features.
    """
    if adapter is None:
        return features
    shape = features.shape
    flat = torch.as_tensor(features, dtype=torch.float32).reshape(-1, 1, shape[-1])  # (M, 1, d)
    was_training = adapter.training
    adapter.eval()
    with torch.no_grad():
        out = torch.cat(
            [adapter(flat[i : i + batch_size]) for i in range(0, len(flat), batch_size)]
        )
    adapter.train(was_training)
    return out.reshape(shape).numpy()


def measure_privacy_and_utility(
    evaluation_set: EvaluationSet,
    adapter: nn.Module | None,
    config: EvaluationConfig,
) -> dict[str, Any]:
    """Attacker cMAP (mean over `attacker_seeds` attackers) and AR probe top-1 on (anonymized)
    central features; percentages, with chance cMAP and the standard error of top-1."""
    privacy = {
        s: Split(anonymize_features(adapter, d.features), d.labels)
        for s, d in evaluation_set.privacy.items()
    }
    attacks = [
        run_attacker(
            privacy["train"],
            privacy["val"],
            privacy["test"],
            epochs=config.attacker_epochs,
            lr=config.attacker_lr,
            batch_size=config.batch_size,
            seed=seed,
        )
        for seed in range(config.attacker_seeds)
    ]
    ar = {
        s: Split(anonymize_features(adapter, d.features), d.labels)
        for s, d in evaluation_set.ar.items()
    }
    probe = run_linear_probe(
        ar["train"],
        ar["val"],
        ar["test"],
        len(evaluation_set.actions),
        epochs=config.probe_epochs,
        lr=config.probe_lr,
        batch_size=config.batch_size,
    )
    # Mean AP per attribute over attacker seeds (None where the test split has no positive).
    per_attribute = {
        name: None
        if attacks[0].per_attribute_ap[i] is None
        else float(np.mean([a.per_attribute_ap[i] for a in attacks]))
        for i, name in enumerate(evaluation_set.attributes)
    }
    return {
        "privacy_cmap": float(np.mean([a.test_cmap for a in attacks])),
        "privacy_cmap_seeds": [a.test_cmap for a in attacks],
        "privacy_val_cmap": float(np.mean([a.val_cmap for a in attacks])),
        "privacy_chance_cmap": attacks[0].chance_cmap,
        "privacy_per_attribute_ap": per_attribute,
        "ar_top1": probe.test_top1,
        "ar_top1_se": probe.test_top1_se,
        "ar_val_top1": probe.val_top1,
        "ar_num_test": probe.num_test,
    }
