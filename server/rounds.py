"""The round loop every run uses, federated (Flower sites) or centralized (pooled data).

    trainer = FlowerTrainer(grid, config, ...)      # server.federation
    trainer = PooledTrainer(model, data, config)    # server.centralized
    state = run_rounds(config, run_dir, evaluation_set, trainer, resume=False)
    finish_run(config, run_dir, state.history, state.selected, wall)

The loop owns what does not depend on how a round trains: the raw-feature baseline and round 0,
the evaluation schedule (round 0, every `evaluation.every` rounds and the last), the selection
of the shipped round (server.selection), the per-round checkpoint that `resume` continues from,
the progress line, and at the end the shipped adapter and the report.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from flwr.app import Array

from common import wire
from common.aam import starts_as_identity
from common.atomic import atomic_path
from common.config import RunConfig
from common.discriminant import ClassMoments, fit_discriminant, with_discriminant
from common.encoders import create_encoder
from common.errors import LatentveilError
from common.evaluation import CentralEvaluator, Evaluation, EvaluationSet
from common.layout import RunLayout
from common.model import AnonymizerModel, build_model
from common.tasks import get_task
from common.weights import check_shareable, load_shareable, shareable_state, state_nbytes
from server.checkpoints import ServerState, load_checkpoint, save_checkpoint
from server.history import History, RoundRecord
from server.report import build_report, write_report
from server.selection import initial_history, update_selection

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger("latentveil.server")


@dataclass
class RoundOutcome:
    """What one round of training produced."""

    arrays: dict[str, np.ndarray]  # the new global AAM + head arrays
    train: dict[str, float] = field(default_factory=dict)  # mean loss components
    sites_sampled: int = 1
    sites_aggregated: int = 1
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"node", "reason"}
    bytes_down: int = 0
    bytes_up: int = 0
    site_seconds: list[float] = field(default_factory=list)  # each site's own compute
    # Sampled sites that did not answer: {"site", "node", "reason"}.
    dropped: list[dict[str, Any]] = field(default_factory=list)
    # Per sampled site: {"site", "node", "bytes_down", "bytes_up", "status"}.
    sites: list[dict[str, Any]] = field(default_factory=list)
    wire: list[dict[str, Any]] = field(default_factory=list)  # the server's wire record
    epsilon: float | None = None  # differential privacy spent so far (None without DP)
    note: str = ""  # why a round changed nothing, when it did not


@dataclass
class SiteMoments:
    """The sites' moments of their training clips that show an action (`anonymizer.init`
    discriminant), by site; the sites left out, with why; the server's wire record of the
    exchange."""

    sites: dict[str, ClassMoments] = field(default_factory=dict)
    left_out: list[dict[str, str]] = field(default_factory=list)
    wire: list[dict[str, Any]] = field(default_factory=list)


class RunStopped(LatentveilError):
    """The run cannot go on (its privacy budget is spent); the rounds so far stand."""


class RoundTrainer(Protocol):
    """How a round trains: Flower sites (server.federation) or pooled data
    (server.centralized)."""

    def train_round(self, server_round: int, arrays: dict[str, np.ndarray]) -> RoundOutcome:
        """Train one round starting from the global `arrays`."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """What must survive a restart besides the arrays (a strategy's or optimiser's state)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None: ...

    def class_moments(self, num_classes: int, dim: int) -> SiteMoments:
        """Each site's moments of its training clips that show an action (common.discriminant)."""
        ...


def initial_model(config: RunConfig, dim: int) -> AnonymizerModel:
    """The model every run starts from: its initial weights depend on `seed` only."""
    return build_model(dim, config, seed=config.seed)


def evaluate_arrays(
    arrays: dict[str, np.ndarray],
    config: RunConfig,
    evaluator: CentralEvaluator,
    stills: bool = True,
) -> Evaluation:
    """Central evaluation of aggregated AAM + head arrays (the attacker suite, the tasks;
    without `stills`, not the stills protocol)."""
    return evaluator.evaluate(_adapter_of(arrays, config, evaluator), stills)


def _adapter_of(
    arrays: dict[str, np.ndarray], config: RunConfig, evaluator: CentralEvaluator
) -> nn.Module:
    model = initial_model(config, evaluator.evaluation_set.dim)
    load_shareable(model, arrays)
    return model.adapter


def add_missing_stills(state: ServerState, config: RunConfig, evaluator: CentralEvaluator) -> bool:
    """Run the stills protocol on the selected round and on the last round trained, if it was
    evaluated, where their evaluations lack it (with `evaluation.stills: selected`, rounds
    before the last run without it; a run stopped early or resumed with fewer rounds may end
    on such a round); returns whether it ran. The selection reads the video protocol only, so
    it does not change. The time counts in the round's evaluation and round seconds."""
    history = state.history
    targets: list[tuple[RoundRecord, dict[str, np.ndarray]]] = []
    if history.selected_round is not None:
        targets.append((history.selected(), state.selected or state.arrays))
    evaluated = history.evaluated()
    if evaluated and evaluated[-1].round == state.round:
        targets.append((evaluated[-1], state.arrays))
    ran = False
    for record, arrays in targets:
        if record.evaluation is None or record.evaluation.privacy.stills_cmap is not None:
            continue
        started = time.perf_counter()
        adapter = _adapter_of(arrays, config, evaluator)
        record.evaluation = evaluator.with_stills(record.evaluation, adapter)
        seconds = time.perf_counter() - started
        record.evaluation_seconds = (record.evaluation_seconds or 0.0) + seconds
        record.seconds = (record.seconds or 0.0) + seconds
        ran = True
    return ran


def run_rounds(
    config: RunConfig,
    run_dir: str | Path,
    evaluation_set: EvaluationSet,
    trainer: RoundTrainer,
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> ServerState:
    """Run (or continue, with `resume`) `federation.rounds` rounds; returns the final state.

    `on_round` is called with each round's record (for a progress line).
    """
    run_dir = Path(run_dir)
    evaluator = CentralEvaluator(evaluation_set, config)
    initial = shareable_state(initial_model(config, evaluation_set.dim))
    if resume:
        state = load_checkpoint(run_dir)
        check_shareable(initial, state.arrays)
        trainer.load_state(state.trainer_state)
        log.info("resuming after round %d of %d", state.round, config.federation.rounds)
    else:
        # The baseline: raw features under the same protocol (server.selection.initial_history
        # says what round 0 is).
        started = time.perf_counter()
        history = initial_history(evaluator.evaluate(None), starts_as_identity(config.anonymizer))
        if config.anonymizer.init == "discriminant":
            initial = discriminant_start(config, trainer, initial, history, run_dir)
            evaluation_started = time.perf_counter()
            history.rounds[0].evaluation = evaluate_arrays(initial, config, evaluator, False)
            history.rounds[0].evaluation_seconds = time.perf_counter() - evaluation_started
            history.selected_round = 0  # until a round the rule prefers (server.selection)
        history.rounds[0].seconds = time.perf_counter() - started
        state = ServerState(0, initial, trainer.state(), history, selected=initial)
        save_checkpoint(run_dir, state)
        if on_round:
            on_round(history.rounds[0])

    rounds = config.federation.rounds
    layout = RunLayout(run_dir)
    wire.keep_rounds(layout.wire_log, state.round)  # rounds after the checkpoint are redone
    for server_round in range(state.round + 1, rounds + 1):
        started = time.perf_counter()
        try:
            outcome = trainer.train_round(server_round, state.arrays)
        except RunStopped as stop:
            log.warning("stopping before round %d: %s", server_round, stop)
            state.history.stopped = f"stopped before round {server_round}: {stop}"
            save_checkpoint(run_dir, state)
            break
        check_shareable(initial, outcome.arrays)
        wire.append(layout.wire_log, outcome.wire)
        rejected = [entry | {"round": server_round} for entry in outcome.rejected]
        record = RoundRecord(
            round=server_round,
            train=outcome.train,
            sites_sampled=outcome.sites_sampled,
            sites_aggregated=outcome.sites_aggregated,
            sites_rejected=rejected,
            bytes_down=outcome.bytes_down,
            bytes_up=outcome.bytes_up,
            slowest_site_seconds=max(outcome.site_seconds, default=0.0),
            site_seconds=sum(outcome.site_seconds),
            sites_dropped=[entry | {"round": server_round} for entry in outcome.dropped],
            sites=outcome.sites,
            epsilon=outcome.epsilon,
            note=outcome.note,
        )
        last = server_round == rounds or _budget_ends_after(trainer)
        if server_round % config.evaluation.every == 0 or last:
            evaluation_started = time.perf_counter()
            stills = last or config.evaluation.stills == "evaluated"
            record.evaluation = evaluate_arrays(outcome.arrays, config, evaluator, stills)
            record.evaluation_seconds = time.perf_counter() - evaluation_started
        record.seconds = time.perf_counter() - started
        history = state.history
        history.rounds.append(record)
        history.rejected.extend(rejected)
        selected = update_selection(
            history, record, outcome.arrays, state.selected or state.arrays, config
        )
        state = ServerState(server_round, outcome.arrays, trainer.state(), history, selected)
        save_checkpoint(run_dir, state)
        if on_round:
            on_round(record)
    if add_missing_stills(state, config, evaluator):
        save_checkpoint(run_dir, state)
    return state


def discriminant_start(
    config: RunConfig,
    trainer: RoundTrainer,
    arrays: dict[str, np.ndarray],
    history: History,
    run_dir: Path,
) -> dict[str, np.ndarray]:
    """`arrays` with the linear discriminant projection of the sites' summed moments in the
    output bottleneck and its rule as the action head (`anonymizer.init` discriminant); the
    fit's account (clips per site, sites left out, variance ratios) goes into `history`, the
    exchange into the server's wire record."""
    dim = arrays["adapter.bottleneck.0.weight"].shape[1]
    moments = trainer.class_moments(config.heads.num_actions, dim)
    wire.append(RunLayout(run_dir).wire_log, moments.wire)
    # The exchange is round 0's traffic (the rounds table's MB columns)
    for direction in ("down", "up"):
        total = sum(e["bytes"] for e in moments.wire if e["direction"] == direction)
        setattr(history.rounds[0], f"bytes_{direction}", int(total))
    if not moments.sites:
        raise RunStopped(
            "no site sent the moments of its action-labelled clips: the discriminant cannot be "
            "fitted" + "".join(f"; {e['site']}: {e['reason']}" for e in moments.left_out)
        )
    pooled = functools.reduce(operator.add, moments.sites.values())
    fit = fit_discriminant(pooled, config.anonymizer.bottleneck, config.anonymizer.shrinkage)
    history.initialisation = {
        "kind": "discriminant",
        "shrinkage": config.anonymizer.shrinkage,
        "clips": {site: int(m.counts.sum()) for site, m in moments.sites.items()},
        "clips_per_class": [int(c) for c in pooled.counts],
        "left_out": moments.left_out,
        "ratios": [float(r) for r in fit.ratios],
    }
    log.info(
        "discriminant start: %d clips of %d sites, variance ratios %s",
        int(pooled.counts.sum()),
        len(moments.sites),
        ", ".join(f"{r:.2f}" for r in fit.ratios),
    )
    return with_discriminant(arrays, fit)


def _budget_ends_after(trainer: RoundTrainer) -> bool:
    """True when the trainer cannot train another round (its privacy budget would be spent):
    the round just trained is then the last and is evaluated."""
    can_continue = getattr(trainer, "can_continue", None)
    return can_continue is not None and not can_continue()


def round_line(record: RoundRecord) -> str:
    """One human line per round."""
    parts = [f"round {record.round:3d}"]
    if record.train:
        losses = (("L_B", "loss_b", 3), ("L_LC", "loss_lc", 4), ("L_T", "loss_t", 3))
        nan = float("nan")
        parts.append(" ".join(f"{n} {record.train.get(k, nan):.{d}f}" for n, k, d in losses))
    if record.evaluation is not None:
        privacy = record.evaluation.privacy
        tasks = " ".join(
            f"{get_task(name).title} {score.test:.2f}"
            for name, score in record.evaluation.tasks.items()
        )
        stills = "" if privacy.stills_cmap is None else f"stills {privacy.stills_cmap:.2f} "
        parts.append(f"privacy cMAP {privacy.cmap:.2f} ({privacy.attacker}) {stills}{tasks}")
    if record.sites_rejected:
        parts.append(f"{len(record.sites_rejected)} update(s) rejected")
    if record.sites_dropped:
        parts.append(f"dropped: {', '.join(e['site'] for e in record.sites_dropped)}")
    if record.epsilon is not None:
        parts.append(f"epsilon {record.epsilon:.2f}")
    parts.append(f"{record.seconds or 0.0:.1f} s")
    return " | ".join(parts)


def save_adapter(arrays: dict[str, np.ndarray], path: Path) -> None:
    """The AAM + head arrays the run ships, for the edge export."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def communication_summary(config: RunConfig, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        encoder_params = sum(p.numel() for p in create_encoder(config.encoder).parameters())
    except (FileNotFoundError, ValueError, ImportError):
        encoder_params = None
    return {
        "shared_params": int(sum(a.size for a in arrays.values())),
        "encoder_params": encoder_params,
        "bytes_per_client_per_round": state_nbytes(arrays),
        # what the float32 arrays cost on the wire (Flower's serialised arrays, as the wire
        # audit counts them): the reference of compressed updates
        "wire_bytes_float32": int(
            sum(len(Array(np.ascontiguousarray(a)).data) for a in arrays.values())
        ),
    }


def finish_run(
    config: RunConfig,
    run_dir: str | Path,
    history: History,
    arrays: dict[str, np.ndarray],
    wall: float,
) -> Path:
    """Save the adapter the run ships (the selected round's arrays, server.selection) and
    write the report; returns report.json's path."""
    layout = RunLayout(Path(run_dir))
    save_adapter(arrays, layout.adapter)
    sites = json.loads(layout.sites.read_text()) if layout.sites.is_file() else []
    report = build_report(
        config,
        history,
        communication_summary(config, arrays),
        sites,
        wall,
        wire_summary(layout) if config.federation.mode == "federated" else None,
    )
    return write_report(report, layout.root)


def wire_summary(layout: RunLayout) -> dict[str, Any]:
    """The wire audit of a run: the server's record and the sites' own records in the run
    folder (`features/<site>.wire.jsonl`; a deployment's remote sites keep theirs)."""
    records = sorted(layout.features.glob("*.wire.jsonl")) if layout.features.is_dir() else []
    site_entries = [entry for path in records for entry in wire.read(path)]
    return wire.summarize(wire.read(layout.wire_log), site_entries if records else None)
