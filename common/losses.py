"""The three SPLAVU losses and their combination.

    L = w_lc * L_LC + w_t * L_T - w_b * L_B      (defaults 100, 1, 1)

L_B, the privacy budget, is SimCLR's NT-Xent between the anonymized features of two static
clips of each video against every other static clip in the batch; it is MAXIMISED (hence the
minus): the adapter learns to make frames of the same video indistinguishable from frames of
other videos, which removes what a single frame says about its actor. L_LC keeps anonymized
features close to the encoder's; L_T keeps them useful.

Two options depart from the paper's loss (both on in simulations/configs/default.yaml, both
off by default here, so that `LossConfig()` is the paper's objective):
- `cap_budget` clips each anchor's term at ln(2N-1). Maximised without a cap, NT-Xent keeps
  paying once a video's two frames are LESS alike than frames of other videos; only an
  adapter that still recognises the video can arrange that, and on our testbed the attacker's
  cMAP went back up while L_B kept rising (EXPERIMENTS.md saw the same).
- `center_budget` subtracts the batch mean before the cosine: the clips of a site share a large
  common part (its background), and growing it makes every pair alike at little cost while
  what tells the actors apart stays.
With both, the budget can only be earned by making what differs between videos carry less of
who is in them. Measured on the validation split, see default.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from common.config import LossConfig


def privacy_budget_loss(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    tau: float = 0.1,
    cap: bool = False,
    center: bool = False,
    groups: torch.Tensor | None = None,
    whiten: bool = False,
) -> torch.Tensor:
    """NT-Xent over two views (N, d) of N videos; both views serve as anchors.

    For anchor i, the positive is the other view of the same video and the negatives are the
    2N - 2 views of the other videos. Similarity is cosine, divided by `tau`.

    `whiten` (implies centring) decorrelates the 2N views and scales every direction to unit
    variance over the batch before the cosine, as an attacker's linear model effectively does:
    a direction of small variance counts as much as a large one, so identity cannot hide in
    directions the plain cosine hardly sees. The views need fewer dimensions than 2N (use the
    bottleneck's code); a small ridge keeps the whitening well-conditioned.

    `groups` (N,) restricts an anchor's negatives to the videos of its own group (its action):
    the budget then pays for making videos of one action indistinguishable from each other
    (who is in them, where), not for blurring the action itself. Anchors without a negative in
    their group add nothing (they are left out of the mean).

    `cap` clips each anchor's term at ln(2N - 1), its value when the positive is no more
    similar than any negative (the video cannot be told from the others). Maximised without a
    cap, the loss keeps paying for positives LESS similar than negatives, which the adapter can
    only arrange by recognising the video: by keeping its identity (see loss.cap_budget).

    `center` subtracts the batch mean of the 2N static clips before the cosine. A site's clips
    share a large common part (its background); without centring, growing that part makes
    every pair alike and the loss rises while what tells the videos apart is untouched.
    """
    if view_a.shape != view_b.shape or view_a.ndim != 2:
        raise ValueError(
            f"views must both be (N, d); got {tuple(view_a.shape)} and {tuple(view_b.shape)}"
        )
    n = view_a.shape[0]
    if n < 2:
        raise ValueError("NT-Xent needs at least 2 videos in the batch (there are no negatives)")
    reps = torch.cat([view_a, view_b])  # (2N, d)
    if center or whiten:
        reps = reps - reps.mean(dim=0, keepdim=True)
    if whiten:
        reps = _whiten(reps)
    reps = F.normalize(reps, dim=-1)
    logits = reps @ reps.T / tau  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=reps.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(reps.device)  # (2N,)
    if groups is None:
        if not cap:
            return F.cross_entropy(logits, positives)
        per_anchor = F.cross_entropy(logits, positives, reduction="none")  # (2N,)
        return per_anchor.clamp(max=math.log(2 * n - 1)).mean()

    if groups.shape != (n,):
        raise ValueError(f"groups must be (N,) = ({n},), got {tuple(groups.shape)}")
    group_of = torch.cat([groups, groups]).to(reps.device)  # (2N,)
    same = group_of[:, None] == group_of[None, :]  # (2N, 2N)
    logits = logits.masked_fill(~same, float("-inf"))
    videos_in_group = same.sum(dim=1) // 2  # (2N,) videos of the anchor's group, itself included
    has_negative = videos_in_group >= 2
    if not bool(has_negative.any()):
        return reps.sum() * 0.0  # no anchor has a negative: nothing to pay for
    per_anchor = F.cross_entropy(logits, positives, reduction="none")  # (2N,)
    if cap:
        per_anchor = torch.minimum(per_anchor, torch.log(2.0 * videos_in_group - 1.0))
    return per_anchor[has_negative].mean()


def _whiten(reps: torch.Tensor, ridge: float = 1e-9) -> torch.Tensor:
    """Centred (M, d) rows -> rows with identity covariance (Cholesky whitening, in float64;
    the cosines that follow do not depend on which whitening is used). The ridge, relative to
    the mean variance, only keeps the factorisation defined: a direction 1000x smaller in
    scale than the others still counts fully."""
    m, d = reps.shape
    if d >= m:
        raise ValueError(
            f"whitening {d}-dimensional views needs more than {d} of them (got {m}); use an "
            "adapter bottleneck smaller than the batch"
        )
    x = reps.double()
    covariance = x.T @ x / (m - 1)  # (d, d)
    covariance = covariance + ridge * covariance.diagonal().mean() * torch.eye(
        d, dtype=x.dtype, device=x.device
    )
    chol = torch.linalg.cholesky(covariance)  # (d, d) lower
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T.to(reps.dtype)  # (M, d)


def latent_consistency_loss(
    encoder_features: torch.Tensor,
    anonymized_features: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    motion: float = 0.0,
    tail: float = 1.0,
) -> torch.Tensor:
    """MSE between encoder and AAM features (B, T, d), over valid positions only; plus, with
    `motion` > 0, `motion` times the MSE between their changes from one clip to the next
    (over pairs of consecutive valid positions): what moves in a video, and not only where its
    features sit, stays as the encoder saw it.

    With `tail` < 1 the position term averages only the worst-kept `tail` fraction of the valid
    clips (at least one): the mean over every clip lets a rare kind of clip, one a few frames
    of a few videos show, go unkept at almost no cost; the mean over the worst-kept clips does
    not. No label is used."""
    squared = (anonymized_features - encoder_features).pow(2)  # (B, T, d)
    if tail < 1.0:
        consistency = _tail_mean(squared.mean(-1), key_padding_mask, tail)
    else:
        consistency = _masked_mean(squared, key_padding_mask)
    if motion == 0.0:
        return consistency
    moved = (anonymized_features.diff(dim=1) - encoder_features.diff(dim=1)).pow(2)  # (B, T-1, d)
    pair_mask = None
    if key_padding_mask is not None:
        pair_mask = key_padding_mask[:, 1:] | key_padding_mask[:, :-1]  # (B, T-1)
    return consistency + motion * _masked_mean(moved, pair_mask)


def _tail_mean(
    errors: torch.Tensor, key_padding_mask: torch.Tensor | None, tail: float
) -> torch.Tensor:
    """Mean of the largest ceil(`tail` x valid) of the per-clip errors (B, T) at the positions
    the mask (True = padding) leaves valid; 0 when none is."""
    valid = errors.flatten() if key_padding_mask is None else errors[~key_padding_mask]
    if valid.numel() == 0:
        return errors.sum() * 0.0
    k = max(1, math.ceil(round(tail * valid.numel(), 9)))  # 0.07 x 100 is 7, not 8
    return valid.topk(k).values.mean()


def _masked_mean(squared: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, T, d) over the positions the mask (B, T; True = padding) leaves valid; 0
    when none is (a batch of one-clip sequences has no pair of consecutive clips)."""
    if key_padding_mask is None:
        return squared.mean() if squared.numel() else squared.sum()
    valid = (~key_padding_mask).unsqueeze(-1).to(squared.dtype)  # (B, T, 1)
    return (squared * valid).sum() / (valid.sum() * squared.shape[-1]).clamp_min(1.0)


def action_recognition_loss(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of action logits (B, C) against integer labels (B,)."""
    return F.cross_entropy(logits, actions)


@dataclass(frozen=True)
class LossTerms:
    """The total objective and each component (for logging)."""

    total: torch.Tensor
    latent_consistency: torch.Tensor
    utility: torch.Tensor
    privacy_budget: torch.Tensor
    # Each task's weighted term of `utility` (they sum to it), by task name; empty when the
    # caller did not keep them apart.
    task_utilities: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """Component values as plain floats, keyed as they appear in logs and metrics."""
        return {
            "loss": float(self.total.detach()),
            "loss_lc": float(self.latent_consistency.detach()),
            "loss_t": float(self.utility.detach()),
            "loss_b": float(self.privacy_budget.detach()),
        }


def splavu_objective(
    latent_consistency: torch.Tensor,
    utility: torch.Tensor,
    privacy_budget: torch.Tensor,
    config: LossConfig,
    task_utilities: Mapping[str, torch.Tensor] | None = None,
) -> LossTerms:
    """Combine the components: w_lc * L_LC + w_t * L_T - w_b * L_B."""
    total = config.w_lc * latent_consistency + config.w_t * utility - config.w_b * privacy_budget
    return LossTerms(total, latent_consistency, utility, privacy_budget, dict(task_utilities or {}))
