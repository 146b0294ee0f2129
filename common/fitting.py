"""One training loop for the evaluation's own models (the AR probe, the attackers, the
inversion attacker's inverse map): minibatch AdamW, scored on the validation split after every
epoch, the best epoch's weights restored at the end (model selection on val, never on test)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FitResult:
    """The best validation score, the epoch that reached it, and how many epochs ran."""

    best_score: float
    best_epoch: int
    epochs_run: int


def fit_selected_on_val(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    validate: Callable[[], float],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    plateau: bool = False,
    patience: int | None = None,
    weight_decay: float = 0.01,
) -> FitResult:
    """Minibatch AdamW for at most `epochs`; after each epoch `validate()` scores the model on
    the validation split (higher is better). With `plateau`, the learning rate halves when
    validation stalls for 5 epochs; with `patience`, training stops once that many epochs have
    passed without a better score. The best epoch's weights are restored, the model left in
    eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=5)
        if plateau
        else None
    )
    best_score, best_epoch, best_state, epoch = float("-inf"), -1, None, 0
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
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        elif patience is not None and epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_score, best_epoch, epoch + 1)
