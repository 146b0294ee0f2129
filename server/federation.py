"""A federated round, driven with a Flower Grid and one of Flower's strategies.

Flower's `Strategy.start` always begins at round 1 and aggregates whatever comes back. The
project's round loop (server.rounds) calls the same strategy methods (configure_train,
aggregate_train) round by round through `FlowerTrainer`, which adds:

- every reply is screened before aggregation: a site whose arrays have the wrong names, shapes
  or dtypes, or non-finite values (or whose reply is an error) is left out of that round with
  the reason logged and recorded in the report; the round goes on with the others;
- replies are aggregated in site order, whatever order they arrive in.

The loop around a round (evaluation, selection, checkpoints) is server.rounds.run_rounds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from common.config import RunConfig
from common.evaluation import EvaluationSet
from common.weights import ShareableStateError, check_shareable, state_nbytes
from server.checkpoints import ServerState
from server.history import RoundRecord
from server.rounds import RoundOutcome, run_rounds
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
            if set(content.config_records) - {"site"}:
                raise ShareableStateError(
                    "a reply may hold only the ConfigRecord 'site', got "
                    f"{list(content.config_records)}"
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


def site_of(reply: Message) -> str:
    """The site a reply comes from: the site id the ClientApp puts in its `site` ConfigRecord
    (Flower's node ids change from run to run), else its node id."""
    site = reply.content.config_records.get("site", {}) if not reply.has_error() else {}
    return str(site.get("id", f"node-{reply.metadata.src_node_id}"))


class FlowerTrainer:
    """A round on Flower's sites: the strategy's configure_train, the Grid's send_and_receive,
    screening, and the strategy's aggregate_train over the accepted replies in site order (so
    that the float sums, and the run, do not depend on which site answers first)."""

    def __init__(self, grid: Grid, config: RunConfig, timeout: float = 3600.0) -> None:
        self.grid = grid
        self.config = config
        self.timeout = timeout
        self.strategy = create_strategy(config.federation, config.world.sites)

    def state(self) -> dict[str, np.ndarray]:
        return strategy_state(self.strategy)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        load_strategy_state(self.strategy, state)

    def train_round(self, server_round: int, arrays: dict[str, np.ndarray]) -> RoundOutcome:
        """Replies are screened against the round's global `arrays` (names, shapes, dtypes)."""
        train_config = ConfigRecord({"proximal-mu": self.config.federation.proximal_mu})
        # Flower samples sites with `random` (fraction_train < 1): the same seed and round
        # sample the same share of the sites.
        random.seed(self.config.seed * 1_000_003 + server_round)
        messages = list(
            self.strategy.configure_train(server_round, to_record(arrays), train_config, self.grid)
        )
        replies = list(self.grid.send_and_receive(messages=messages, timeout=self.timeout))
        accepted, rejected = screen_replies(replies, arrays)
        accepted.sort(key=lambda reply: (site_of(reply), int(reply.metadata.src_node_id)))
        new_arrays = arrays
        train_metrics: dict[str, float] = {}
        if accepted:
            aggregated, metrics = self.strategy.aggregate_train(server_round, accepted)
            if aggregated is not None:
                # Server optimisers (FedAdam, FedYogi) compute in float64: back to the model's
                # dtypes, so what is sent next round loads strictly at every site.
                new_arrays = {
                    k: v.astype(arrays[k].dtype) for k, v in from_record(aggregated).items()
                }
                check_shareable(arrays, new_arrays)
            train_metrics = {k: float(v) for k, v in (metrics or {}).items()}
        else:
            log.warning(
                "round %d: no usable update; the global arrays stay as they were", server_round
            )
        return RoundOutcome(
            arrays=new_arrays,
            train=train_metrics,
            sites_sampled=len(messages),
            sites_aggregated=len(accepted),
            rejected=rejected,
            bytes_down=state_nbytes(arrays) * len(messages),
            bytes_up=int(sum(_reply_bytes(r) for r in replies)),
            site_seconds=[
                float(next(iter(r.content.metric_records.values())).get("seconds", 0.0))
                for r in accepted
            ],
        )


def run_federation(
    grid: Grid,
    config: RunConfig,
    run_dir: str | Path,
    evaluation_set: EvaluationSet,
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    timeout: float = 3600.0,
) -> ServerState:
    """Run (or continue) `federation.rounds` federated rounds (server.rounds.run_rounds);
    returns the final state."""
    trainer = FlowerTrainer(grid, config, timeout)
    return run_rounds(config, run_dir, evaluation_set, trainer, resume, on_round)
