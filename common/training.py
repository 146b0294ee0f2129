"""One local SPLAVU training step on cached features.

Like the authors' code, the adapter and all task heads take ONE joint AdamW step per batch on
w_lc * L_LC + w_t * L_T - w_b * L_B (not alternating GAN-style steps). FedProx's proximal term
is added when the strategy asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from common.config import LossConfig, TrainConfig
from common.losses import (
    LossTerms,
    action_recognition_loss,
    latent_consistency_loss,
    privacy_budget_loss,
    splavu_objective,
)
from common.model import AnonymizerModel


@dataclass(frozen=True)
class TrainingBatch:
    """A batch of cached features of B videos."""

    clip_features: torch.Tensor  # (B, T, d) consecutive clip features of each video
    actions: torch.Tensor  # (B,) action labels
    static_features: torch.Tensor  # (B, 2, d) two static clips of each video
    key_padding_mask: torch.Tensor | None = None  # (B, T), True at padding


def build_optimizer(model: AnonymizerModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the adapter (lr) and the task heads (head_lr)."""
    groups = [{"params": list(model.adapter.parameters()), "lr": config.lr}]
    head_params = list(model.heads.parameters())
    if head_params:
        groups.append({"params": head_params, "lr": config.head_lr})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def compute_losses(model: AnonymizerModel, batch: TrainingBatch, config: LossConfig) -> LossTerms:
    """The SPLAVU objective on one batch, with each component."""
    B, _, d = batch.clip_features.shape
    if batch.static_features.shape != (B, 2, d):
        got = tuple(batch.static_features.shape)
        raise ValueError(f"static_features must be (B, 2, d) = {(B, 2, d)}, got {got}")
    anonymized = model.adapter(batch.clip_features, batch.key_padding_mask)  # (B, T, d)
    lc = latent_consistency_loss(batch.clip_features, anonymized, batch.key_padding_mask)

    utility = anonymized.new_zeros(())
    if "ar" in model.heads:
        logits = model.heads["ar"](anonymized, batch.key_padding_mask)  # (B, C)
        utility = utility + config.w_ar * action_recognition_loss(logits, batch.actions)

    # Each static clip is a sequence of length 1: its anonymization sees nothing else.
    static = batch.static_features.reshape(B * 2, 1, d)  # (2B, 1, d)
    anonymized_static = model.adapter(static).reshape(B, 2, d)  # (B, 2, d)
    budget = privacy_budget_loss(anonymized_static[:, 0], anonymized_static[:, 1], config.tau)
    return splavu_objective(lc, utility, budget, config)


def proximal_term(
    model: AnonymizerModel, global_params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """sum ||w - w_global||^2 over the trainable parameters named in `global_params`."""
    total = torch.zeros(())
    for name, param in model.named_parameters():
        if name in global_params:
            total = total + (param - global_params[name]).pow(2).sum()
    return total


def training_step(
    model: AnonymizerModel,
    optimizer: torch.optim.Optimizer,
    batch: TrainingBatch,
    config: LossConfig,
    proximal_mu: float = 0.0,
    global_params: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """One joint optimiser step on the adapter and heads; returns the loss components."""
    model.train()
    terms = compute_losses(model, batch, config)
    total = terms.total
    metrics = terms.as_floats()
    if proximal_mu > 0.0:
        if global_params is None:
            raise ValueError("proximal_mu > 0 needs the global parameters of the round")
        prox = proximal_term(model, global_params)
        total = total + 0.5 * proximal_mu * prox
        metrics["loss_prox"] = float(prox.detach())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return metrics
