"""Local SPLAVU training on cached features: the objective, one step, and a site's epochs.

Like the authors' code, the adapter and all task heads take ONE joint AdamW step per batch on
w_lc * L_LC + w_t * L_T - w_b * L_B (not alternating GAN-style steps). FedProx's proximal term
is added when the strategy asks for it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from common.aam import anonymize_in_windows
from common.config import TASK_SCHEDULES, LossConfig, RunConfig, TrainConfig
from common.losses import (
    LossTerms,
    latent_consistency_loss,
    privacy_budget_loss,
    splavu_objective,
)
from common.model import AnonymizerModel
from common.sitedata import SiteData, TaskTensors
from common.tasks import get_task


@dataclass(frozen=True)
class TaskBatch:
    """A batch of cached features of B videos of one task."""

    clip_features: torch.Tensor  # (B, T, d) consecutive clip features of each video
    static_features: torch.Tensor  # (B, 2, d) two static clips of each video, or (B, 0, d)
    labels: dict[str, torch.Tensor]  # the task's labels (common.tasks), each (B, ...)
    key_padding_mask: torch.Tensor | None = None  # (B, T), True at padding


@dataclass(frozen=True)
class TrainingBatch:
    """One step's batches, keyed by task name (the seen tasks the site has data for)."""

    tasks: dict[str, TaskBatch]


def build_optimizer(model: AnonymizerModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the adapter (lr) and the task heads (head_lr)."""
    groups = [{"params": list(model.adapter.parameters()), "lr": config.lr}]
    head_params = list(model.heads.parameters())
    if head_params:
        groups.append({"params": head_params, "lr": config.head_lr})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def compute_losses(
    model: AnonymizerModel,
    batch: TrainingBatch,
    config: LossConfig,
    weights: Mapping[str, float] | None = None,
    window: int | None = None,
) -> LossTerms:
    """The SPLAVU objective on one batch, with each component.

    Each task's videos are anonymized (a sequence longer than `window` clips in consecutive
    windows, as a deployment does; None: one sequence); L_LC and L_B are averaged over the
    tasks' batches (`loss.task_average`: each batch alike, or weighted by its videos; L_B
    instead summed over them with `loss.budget_combine` "sum"), L_T is the sum of each task's
    loss times its weight (`tasks.seen`; None: 1 for every task). L_B covers only the videos of
    the tasks in `loss.budget_tasks` (None: every task's); a batch with none has L_B = 0.
    """
    consistency, budgets = [], []
    utility = None
    consistency_weights, budget_weights = [], []
    task_pairs: list[list[torch.Tensor]] = []  # each task's budget pairs
    task_utilities: dict[str, torch.Tensor] = {}
    for name, task_batch in batch.tasks.items():
        task = get_task(name)
        clips, mask = task_batch.clip_features, task_batch.key_padding_mask
        videos = float(len(clips)) if config.task_average == "videos" else 1.0
        if window is not None and clips.shape[1] > window:
            if mask is not None:
                raise ValueError("padded sequences longer than the anonymizer window")
            anonymized = anonymize_in_windows(model.adapter, clips, window)
        else:
            anonymized = model.adapter(clips, mask)
        consistency.append(
            latent_consistency_loss(
                task_batch.clip_features,
                anonymized,
                task_batch.key_padding_mask,
                config.lc_motion,
                config.lc_tail,
            )
        )
        consistency_weights.append(videos)
        if utility is None:
            utility = anonymized.new_zeros(())
        if name in model.heads:
            loss = task.loss(
                model.heads[name], anonymized, task_batch.labels, task_batch.key_padding_mask
            )
            task_utilities[name] = (1.0 if weights is None else weights.get(name, 0.0)) * loss
            utility = utility + task_utilities[name]
        if config.budget_tasks is not None and name not in config.budget_tasks:
            continue
        groups = (
            task.budget_groups(task_batch.labels)
            if config.budget_negatives == "same_action"
            else None
        )
        pairs = [
            privacy_budget_loss(
                a,
                b,
                config.tau,
                cap=config.cap_budget,
                center=config.center_budget,
                groups=groups,
                whiten=config.whiten_budget,
            )
            for a, b in budget_views(model, task_batch, config)
        ]
        budgets.extend(pairs)
        budget_weights.extend([videos] * len(pairs))
        task_pairs.append(pairs)
    if utility is None:
        raise ValueError("a training batch needs the videos of at least one task")
    lc = _weighted_mean(consistency, consistency_weights)
    if not budgets:  # no video of the batch is under the budget (loss.budget_tasks)
        budget = lc.new_zeros(())
    elif config.budget_combine == "sum":
        budget = torch.stack([torch.stack(pairs).mean() for pairs in task_pairs]).sum()
    else:
        budget = _weighted_mean(budgets, budget_weights)
    return splavu_objective(lc, utility, budget, config, task_utilities)


def _weighted_mean(values: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum(w * v) / sum(w) of scalar tensors (equal weights: exactly the plain mean)."""
    if len(set(weights)) == 1:
        return torch.stack(values).mean()
    w = torch.tensor(weights, dtype=values[0].dtype)
    return (torch.stack(values) * w).sum() / w.sum()


def budget_views(
    model: AnonymizerModel, batch: TaskBatch, config: LossConfig
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The privacy budget's pairs of views of each video (`loss.budget_views`).

    Two of its static clips, each a sequence of length 1 (the paper), or its moving clips: the
    kind of input a deployment anonymizes and releases, so the adapter cannot treat the
    budget's inputs differently from what it must keep useful ("both" gives both pairs).
    """
    B, T, d = batch.clip_features.shape
    views: list[tuple[torch.Tensor, torch.Tensor]] = []
    # With whitening, a view is the bottleneck's code (r < 2B dimensions), which determines the
    # output; otherwise the output itself.
    view = model.adapter.code if config.whiten_budget else model.adapter
    if config.budget_views in ("static", "both"):
        if batch.static_features.shape != (B, 2, d):
            got = tuple(batch.static_features.shape)
            raise ValueError(
                f"loss.budget_views={config.budget_views} needs two static clips of each video, "
                f"static_features (B, 2, d) = {(B, 2, d)}, got {got} (a store made without "
                "static clips has none: features.static_clips, common.sitedata)"
            )
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
    return views


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
    weights: Mapping[str, float] | None = None,
    proximal_mu: float = 0.0,
    global_params: Mapping[str, torch.Tensor] | None = None,
    window: int | None = None,
) -> dict[str, float]:
    """One joint optimiser step on the adapter and heads; returns the loss components."""
    model.train()
    terms = compute_losses(model, batch, config, weights, window)
    total = terms.total
    metrics = terms.as_floats()
    proximal = None
    if proximal_mu > 0.0:
        if global_params is None:
            raise ValueError("proximal_mu > 0 needs the global parameters of the round")
        prox = proximal_term(model, global_params)
        proximal = 0.5 * proximal_mu * prox
        total = total + proximal
        metrics["loss_prox"] = float(prox.detach())
    optimizer.zero_grad(set_to_none=True)
    if config.budget_surgery:
        surgery = backward_with_budget_surgery(model, terms, config, proximal)
        metrics["budget_conflict"] = float(surgery)
    else:
        total.backward()
    optimizer.step()
    return metrics


def backward_with_budget_surgery(
    model: AnonymizerModel,
    terms: LossTerms,
    config: LossConfig,
    proximal: torch.Tensor | None = None,
) -> bool:
    """Fill the parameters' gradients of the objective (`terms`, plus a `proximal` term) with
    the tasks' gradient on the adapter made to not work against the privacy budget's
    (`loss.budget_surgery`); returns whether it had to.

    With g_t the gradient of w_t * L_T on the adapter's parameters (all of them as one vector)
    and g_b that of -w_b * L_B: when g_t . g_b < 0, a step along g_t would undo some of what the
    budget's step does, and g_t loses its component along g_b (PCGrad, Yu et al. 2020):
    g_t - (g_t . g_b / |g_b|^2) g_b. The heads' gradients are as in the joint step, and so is
    the rest of the objective (L_LC, a proximal term) with `loss.budget_surgery_scope` "tasks":
    that costs one more backward pass through the adapter than the joint step (L_T and L_LC
    share its forward pass). With "objective", g_t is the gradient of all of the objective but
    the budget (L_T, L_LC and a proximal term), projected alike, at the joint step's cost.
    With "each_task", every seen task's term of L_T is projected on its own, so that no task's
    gradient works against the budget even where the others' outweigh it in the sum (with
    one task, the same as "tasks").
    Without a conflict this is exactly the joint step's gradient.
    """
    adapter = [p for p in model.adapter.parameters() if p.requires_grad]
    heads = [p for p in model.heads.parameters() if p.requires_grad]
    # The rest, L_LC and a proximal term: inside the projected gradient ("objective" scope: one
    # backward pass through the tasks' forward for all of it), or on its own ("tasks", after the
    # two passes below, which keep the graph; a backward pass from the whole objective would run
    # through them again, with zero gradients, at their full cost).
    rest = config.w_lc * terms.latent_consistency
    if proximal is not None:
        rest = rest + proximal
    rest_projected = config.budget_surgery_scope == "objective"
    if config.budget_surgery_scope == "each_task" and terms.task_utilities:
        # Each task's term has a forward pass of its own (its batch), so its own backward pass
        # costs what its share of the tasks' pass does.
        projected = [config.w_t * term for term in terms.task_utilities.values()]
    else:
        projected = [config.w_t * terms.utility + (rest if rest_projected else 0.0)]
    task_grads = [_grads(term, adapter + heads) for term in projected]
    budget_grads = _grads(-config.w_b * terms.privacy_budget, adapter)
    if not rest_projected and rest.requires_grad:
        rest.backward()
    budget_norm = sum(b.pow(2).sum() for b in budget_grads)
    conflict = False
    projected_grads = []  # per projected term, its adapter gradients with the conflict taken out
    for grads in task_grads:
        adapter_task_grads, head_grads = grads[: len(adapter)], grads[len(adapter) :]
        dot = sum((t * b).sum() for t, b in zip(adapter_task_grads, budget_grads, strict=True))
        conflicting = bool(dot < 0)  # (a negative dot product needs a nonzero g_b)
        conflict = conflict or conflicting
        scale = dot / budget_norm if conflicting else 0.0
        projected_grads.append(
            [t - scale * b for t, b in zip(adapter_task_grads, budget_grads, strict=True)]
        )
        for param, task_grad in zip(heads, head_grads, strict=True):
            _add_grad(param, task_grad)
    for param, grads, budget_grad in zip(
        adapter, zip(*projected_grads, strict=True), budget_grads, strict=True
    ):
        _add_grad(param, functools.reduce(torch.add, grads) + budget_grad)
    return conflict


def _add_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    param.grad = grad if param.grad is None else param.grad + grad


def _grads(term: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d term / d params, zeros for a parameter the term does not depend on (keeps the graph)."""
    if not term.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


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


def make_task_batch(
    data: TaskTensors, index: torch.Tensor, seq_len: int | None, generator: torch.Generator
) -> TaskBatch:
    """`seq_len` consecutive clips from a random start (the anonymizer's window; all clips of a
    shorter video, or of every video when None) and two random static clips per video (none
    when the store has none)."""
    clips = data.clip_features  # (N, C, d)
    num_clips = clips.shape[1]
    seq_len = num_clips if seq_len is None else min(seq_len, num_clips)
    starts = torch.randint(0, num_clips - seq_len + 1, (len(index),), generator=generator)
    positions = starts[:, None] + torch.arange(seq_len)  # (B, T)
    clip_batch = clips[index[:, None], positions]  # (B, T, d)
    statics = data.static_features  # (N, K, d); K = 0: a store without static clips
    k = statics.shape[1]
    if k == 1:
        raise ValueError("the privacy budget loss needs 2 static clips per video (or none)")
    # Drawn without static clips too, so that the batches do not depend on whether the store
    # kept them (for K = 2, the default, the same draws either way).
    pairs = torch.stack(
        [torch.randperm(max(k, 2), generator=generator)[:2] for _ in range(len(index))]
    )
    static_batch = statics[index[:, None], pairs] if k else statics[index][:, :0]  # (B, 2|0, d)
    labels = {name: value[index] for name, value in data.labels.items()}
    return TaskBatch(clip_batch, static_batch, labels)


def task_batch_at(step: int, batches: int, steps: int, schedule: str = "repeat") -> int | None:
    """Which of a task's `batches` in an epoch of `steps` steps the step `step` takes
    (`train.task_schedule`), or None if the step leaves the task out.

    "repeat": every step, the batches starting again; "once": batch j at step
    floor(j * steps / batches), each batch once, spread evenly over the epoch.
    """
    if schedule not in TASK_SCHEDULES:
        raise ValueError(f"unknown task schedule {schedule!r}; choose one of {TASK_SCHEDULES}")
    if schedule == "repeat" or batches >= steps:
        return step % batches
    index = -(-step * batches // steps)  # the first j with floor(j * steps / batches) >= step
    return index if index < batches and index * steps // batches == step else None


def train_local(
    model: AnonymizerModel,
    data: SiteData,
    config: RunConfig,
    proximal_mu: float = 0.0,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Train `train.epochs` epochs on a site's cached features of its seen tasks.

    Every step takes one batch of each task's videos (a task with fewer batches than the
    others starts again, or with `train.task_schedule` "once" takes part in only as many
    steps as it has batches); an epoch ends when the task with the most videos has been seen
    once.
    A task with fewer than 2 videos here is left out (the privacy budget needs two).
    Each video is one sequence of at most `anonymizer.window` consecutive clips.
    A site starts every round with a fresh AdamW (as in the authors' federated setting and
    Flower's examples); pass `optimizer` to keep one across calls (the centralized baseline).
    Returns the mean of each loss component over the steps, and the number of steps.
    """
    # NT-Xent needs two videos of a batch: a task with fewer at this site sits the round out.
    data = {name: task_data for name, task_data in data.items() if len(task_data) >= 2}
    if not data:
        raise ValueError(
            "local training needs at least 2 videos of some task (NT-Xent has no negatives "
            "otherwise)"
        )
    generator = torch.Generator().manual_seed(seed)
    schedule = config.train.task_schedule
    optimizer = optimizer or build_optimizer(model, config.train)
    global_params = None
    if proximal_mu > 0.0:
        global_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    totals: dict[str, float] = {}
    steps = 0
    batch_size = config.train.batch_size
    # Heads with dropout draw from torch's global generator: seed it from `seed` for this call
    # only, so that a site's update does not depend on what its process ran before.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(config.train.epochs):
            orders = {
                name: sample_batches(len(task_data), batch_size, generator)
                for name, task_data in data.items()
            }
            num_steps = max(len(order) for order in orders.values())
            for step in range(num_steps):
                batch = TrainingBatch(
                    {
                        name: make_task_batch(
                            data[name],
                            order[index],
                            None if get_task(name).whole_video else config.anonymizer.window,
                            generator,
                        )
                        for name, order in orders.items()
                        if (index := task_batch_at(step, len(order), num_steps, schedule))
                        is not None
                    }
                )
                metrics = training_step(
                    model,
                    optimizer,
                    batch,
                    config.loss,
                    config.tasks.seen,
                    proximal_mu,
                    global_params,
                    window=config.anonymizer.window,
                )
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                steps += 1
    model.eval()
    return {key: value / max(steps, 1) for key, value in totals.items()} | {"steps": float(steps)}


def evaluate_site(model: AnonymizerModel, data: SiteData, window: int = 1) -> dict[str, float]:
    """Each task's metric (common.tasks, keyed `<task>_<metric>`) of the model's own head on a
    site's videos, their clips anonymized in windows of `window` clips as a deployment does."""
    model.eval()
    scores = {}
    with torch.no_grad():
        for name, task_data in data.items():
            if name not in model.heads:
                continue
            task = get_task(name)
            anonymized = anonymize_in_windows(model.adapter, task_data.clip_features, window)
            scores[task.test_key] = task.site_metric(
                model.heads[name], anonymized, task_data.labels
            )
    return scores
