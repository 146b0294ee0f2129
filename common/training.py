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
    """The SPLAVU objective on one batch, with each component.

    The privacy budget's two views of a video (`loss.budget_views`) are two of its static
    clips, each a sequence of length 1 (the paper), or its moving clips: the kind of input a
    deployment anonymizes and releases, so the adapter cannot treat the budget's inputs
    differently from what it must keep useful ("both" averages the two terms).
    """
    B, T, d = batch.clip_features.shape
    if batch.static_features.shape != (B, 2, d):
        got = tuple(batch.static_features.shape)
        raise ValueError(f"static_features must be (B, 2, d) = {(B, 2, d)}, got {got}")
    anonymized = model.adapter(batch.clip_features, batch.key_padding_mask)  # (B, T, d)
    lc = latent_consistency_loss(batch.clip_features, anonymized, batch.key_padding_mask)

    utility = anonymized.new_zeros(())
    if "ar" in model.heads:
        logits = model.heads["ar"](anonymized, batch.key_padding_mask)  # (B, C)
        utility = utility + config.w_ar * action_recognition_loss(logits, batch.actions)

    groups = batch.actions if config.budget_negatives == "same_action" else None
    views: list[tuple[torch.Tensor, torch.Tensor]] = []
    # With whitening, a view is the bottleneck's code (r < 2B dimensions), which determines the
    # output; otherwise the output itself.
    view = model.adapter.code if config.whiten_budget else model.adapter
    if config.budget_views in ("static", "both"):
        # Each static clip is a sequence of length 1: its anonymization sees nothing else.
        static = batch.static_features.reshape(B * 2, 1, d)  # (2B, 1, d)
        anonymized_static = view(static).reshape(B, 2, -1)  # (B, 2, d) or (B, 2, r)
        views.append((anonymized_static[:, 0], anonymized_static[:, 1]))
    if config.budget_views in ("clips", "both"):
        # Two disjoint halves of each video's sequence, each anonymized as a sequence of its
        # own, and each half's mean as one view. Views taken from ONE sequence could be told
        # apart by attention (outputs pushed apart inside the sequence while their mean, what
        # is released per video, keeps the identity); separate sequences cannot see each other.
        if T < 2:
            raise ValueError(
                "loss.budget_views=clips needs two clips per sequence: videos of at least 2 "
                f"clips and anonymizer.window >= 2 (sequences here have {T} clip(s))"
            )
        half = T // 2
        first = view(batch.clip_features[:, :half]).mean(dim=1)  # (B, d) or (B, r)
        second = view(batch.clip_features[:, half : 2 * half]).mean(dim=1)
        views.append((first, second))
    budget = torch.stack(
        [
            privacy_budget_loss(
                a,
                b,
                config.tau,
                cap=config.cap_budget,
                center=config.center_budget,
                groups=groups,
                whiten=config.whiten_budget,
            )
            for a, b in views
        ]
    ).mean()
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


def sample_batches(
    num_videos: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """A shuffled epoch of video indices in batches; a last batch of one video is merged into
    the previous one, since NT-Xent needs at least two videos."""
    order = torch.randperm(num_videos, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def make_training_batch(
    tensors: dict[str, torch.Tensor], index: torch.Tensor, seq_len: int, generator: torch.Generator
) -> TrainingBatch:
    """`seq_len` consecutive clips from a random start (the anonymizer's window; all clips of a
    shorter video) and two random static clips per video."""
    clips = tensors["clip_features"]  # (N, C, d)
    num_clips = clips.shape[1]
    seq_len = min(seq_len, num_clips)
    starts = torch.randint(0, num_clips - seq_len + 1, (len(index),), generator=generator)
    positions = starts[:, None] + torch.arange(seq_len)  # (B, T)
    clip_batch = clips[index[:, None], positions]  # (B, T, d)
    statics = tensors["static_features"]  # (N, K, d)
    k = statics.shape[1]
    if k < 2:
        raise ValueError("the privacy budget loss needs at least 2 static clips per video")
    pairs = torch.stack([torch.randperm(k, generator=generator)[:2] for _ in range(len(index))])
    static_batch = statics[index[:, None], pairs]  # (B, 2, d)
    return TrainingBatch(clip_batch, tensors["actions"][index], static_batch)


def train_local(
    model: AnonymizerModel,
    tensors: dict[str, torch.Tensor],
    train_config: TrainConfig,
    loss_config: LossConfig,
    proximal_mu: float = 0.0,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    window: int = 1,
) -> dict[str, float]:
    """Train `train_config.epochs` epochs on a site's cached features.

    A site starts every round with a fresh AdamW (as in the authors' federated setting and
    Flower's examples); pass `optimizer` to keep one across calls (the centralized baseline).
    Each video is one sequence of at most `window` consecutive clips (anonymizer.window).
    Returns the mean of each loss component over the steps, and the number of steps.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = optimizer or build_optimizer(model, train_config)
    global_params = None
    if proximal_mu > 0.0:
        global_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    num_videos = len(tensors["actions"])
    if num_videos < 2:
        raise ValueError(
            "local training needs at least 2 videos (NT-Xent has no negatives otherwise)"
        )
    totals: dict[str, float] = {}
    steps = 0
    for _ in range(train_config.epochs):
        for index in sample_batches(num_videos, train_config.batch_size, generator):
            batch = make_training_batch(tensors, index, window, generator)
            metrics = training_step(
                model, optimizer, batch, loss_config, proximal_mu, global_params
            )
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
            steps += 1
    model.eval()
    return {key: value / max(steps, 1) for key, value in totals.items()} | {"steps": float(steps)}


def evaluate_action_recognition(
    model: AnonymizerModel, tensors: dict[str, torch.Tensor], window: int = 1
) -> float:
    """AR top-1 (percent) of the model's own head on each video's clips, anonymized in windows of
    `window` clips as a deployment does; the head averages over all of a video's clips."""
    clips = tensors["clip_features"]  # (N, C, d)
    model.eval()
    with torch.no_grad():
        anonymized = torch.cat(
            [model.adapter(clips[:, s : s + window]) for s in range(0, clips.shape[1], window)],
            dim=1,
        )  # (N, C, d)
        logits = model.heads["ar"](anonymized)  # (N, num_actions)
    return 100.0 * float((logits.argmax(dim=1) == tensors["actions"]).float().mean())
