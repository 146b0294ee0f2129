"""The federated rounds, driven with a Flower Grid and one of Flower's strategies.

Flower's `Strategy.start` always begins at round 1 and aggregates whatever comes back. This loop
calls the same strategy methods (configure_train, aggregate_train) round by round, and adds
what the project needs around them:

- every reply is screened before aggregation: a site whose arrays have the wrong names, shapes
  or dtypes, or non-finite values (or whose reply is an error) is left out of that round with
  the reason logged and recorded in the report; the round goes on with the others;
- after every round the aggregated arrays, the round number and the strategy's state are
  written atomically, so `resume` continues from the last complete round;
- central evaluation (privacy attacker and AR probe on the central world) at round 0, every
  `evaluation.every` rounds and after the last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from common.aam import starts_as_identity
from common.config import RunConfig
from common.evaluation import CentralEvaluator, EvaluationSet
from common.model import AnonymizerModel, build_model
from common.weights import (
    ShareableStateError,
    check_shareable,
    load_shareable,
    shareable_state,
    state_nbytes,
)
from server.checkpoints import ServerState, load_checkpoint, save_checkpoint
from server.selection import initial_history, update_selection
from server.strategies import create_strategy, load_strategy_state, strategy_state

log = logging.getLogger("latentveil.server")


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(array)) for name, array in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def screen_replies(
    replies: Iterable[Message], expected: dict[str, np.ndarray]
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Split replies into those fit to aggregate and (node, reason) records of the others."""
    accepted: list[Message] = []
    rejected: list[dict[str, Any]] = []
    metric_keys: set[str] | None = None
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        try:
            if reply.has_error():
                raise ShareableStateError(f"the site replied with an error: {reply.error.reason}")
            content = reply.content
            if list(content.array_records) != ["arrays"] or len(content.metric_records) != 1:
                raise ShareableStateError(
                    "a reply must hold exactly one ArrayRecord 'arrays' and one MetricRecord, got "
                    f"{list(content.array_records)} and {list(content.metric_records)}"
                )
            check_shareable(expected, from_record(content.array_records["arrays"]))
            metrics = next(iter(content.metric_records.values()))
            if not float(metrics.get("num-examples", 0)) > 0:
                raise ShareableStateError("the reply's metrics lack a positive 'num-examples'")
            keys = set(metrics)
            if metric_keys is not None and keys != metric_keys:
                raise ShareableStateError(
                    f"metric keys {sorted(keys)} differ from the other sites' {sorted(metric_keys)}"
                )
            metric_keys = keys
        except (ShareableStateError, KeyError, TypeError, ValueError) as error:
            log.warning("round: update from node %s excluded: %s", node, error)
            rejected.append({"node": node, "reason": str(error)})
            continue
        accepted.append(reply)
    return accepted, rejected


def _reply_bytes(reply: Message) -> int:
    if reply.has_error():
        return 0
    return int(
        sum(
            a.numpy().nbytes
            for record in reply.content.array_records.values()
            for a in record.values()
        )
    )


def evaluate_arrays(
    arrays: dict[str, np.ndarray], config: RunConfig, evaluator: CentralEvaluator
) -> dict[str, Any]:
    """Central evaluation of aggregated AAM + head arrays (the attacker suite and the probe)."""
    model = _model(config, evaluator.evaluation_set)
    load_shareable(model, arrays)
    return evaluator.evaluate(model.adapter)


def _model(config: RunConfig, evaluation_set: EvaluationSet) -> AnonymizerModel:
    return build_model(evaluation_set.dim, config, seed=config.seed)


def run_federation(
    grid: Grid,
    config: RunConfig,
    run_dir: str | Path,
    evaluation_set: EvaluationSet,
    resume: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 3600.0,
) -> ServerState:
    """Run (or continue) `federation.rounds` rounds; returns the final state.

    `on_round` is called with each round's record (for a progress line).
    """
    run_dir = Path(run_dir)
    evaluator = CentralEvaluator(evaluation_set, config.evaluation, config.anonymizer.window)
    num_sites = config.world.sites
    strategy = create_strategy(config.federation, num_sites)
    initial = shareable_state(_model(config, evaluation_set))

    if resume:
        state = load_checkpoint(run_dir)
        check_shareable(initial, state.arrays)
        load_strategy_state(strategy, state.strategy_state)
        log.info("resuming after round %d of %d", state.round, config.federation.rounds)
    else:
        # The baseline: raw features under the same protocol (server.selection.initial_history
        # says what round 0 is).
        started = time.perf_counter()
        history = initial_history(evaluator.evaluate(None), starts_as_identity(config.anonymizer))
        record = history["rounds"][0]
        record["seconds"] = time.perf_counter() - started
        state = ServerState(0, initial, {}, history, selected=initial)
        save_checkpoint(run_dir, state)
        if on_round:
            on_round(record)

    train_config = ConfigRecord({"proximal-mu": config.federation.proximal_mu})
    rounds = config.federation.rounds
    down_bytes = state_nbytes(initial)
    for server_round in range(state.round + 1, rounds + 1):
        started = time.perf_counter()
        messages = list(
            strategy.configure_train(server_round, to_record(state.arrays), train_config, grid)
        )
        replies = list(grid.send_and_receive(messages=messages, timeout=timeout))
        accepted, rejected = screen_replies(replies, initial)
        for entry in rejected:
            entry["round"] = server_round
        arrays = state.arrays
        train_metrics: dict[str, float] = {}
        if accepted:
            aggregated, metrics = strategy.aggregate_train(server_round, accepted)
            if aggregated is not None:
                # Server optimisers (FedAdam, FedYogi) compute in float64: back to the model's
                # dtypes, so what is sent next round loads strictly at every site.
                arrays = {k: v.astype(initial[k].dtype) for k, v in from_record(aggregated).items()}
                check_shareable(initial, arrays)
            train_metrics = {k: float(v) for k, v in (metrics or {}).items()}
        else:
            log.warning(
                "round %d: no usable update; the global arrays stay as they were", server_round
            )
        site_seconds = [
            float(next(iter(r.content.metric_records.values())).get("seconds", 0.0))
            for r in accepted
        ]
        record: dict[str, Any] = {
            "round": server_round,
            "train": train_metrics,
            "sites_sampled": len(messages),
            "sites_aggregated": len(accepted),
            "sites_rejected": rejected,
            "bytes_down": down_bytes * len(messages),
            "bytes_up": int(sum(_reply_bytes(r) for r in replies)),
            "slowest_site_seconds": max(site_seconds, default=0.0),
        }
        if server_round % config.evaluation.every == 0 or server_round == rounds:
            evaluation_started = time.perf_counter()
            record["evaluation"] = evaluate_arrays(arrays, config, evaluator)
            record["evaluation_seconds"] = time.perf_counter() - evaluation_started
        record["seconds"] = time.perf_counter() - started
        history = dict(state.history)
        history["rounds"] = [*history["rounds"], record]
        history["rejected"] = [*history.get("rejected", []), *rejected]
        selected = update_selection(
            history, record, arrays, state.selected or state.arrays, config.evaluation
        )
        state = ServerState(server_round, arrays, strategy_state(strategy), history, selected)
        save_checkpoint(run_dir, state)
        if on_round:
            on_round(record)
    return state
