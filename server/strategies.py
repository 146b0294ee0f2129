"""Flower's own Message-API strategies behind one registry, chosen by `federation.strategy`.

Nothing here re-implements aggregation: each entry builds the Flower strategy with the settings
the config names. What the project adds is state handling: the server-side optimiser state of
FedAdam / FedYogi / FedAvgM (moments, momentum, current arrays) is read out and written back so
that `--resume` continues exactly where a run stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from common.config import FederationConfig
from common.errors import LatentveilError
from common.registry import Registry


class StrategyError(LatentveilError):
    """An unknown strategy name or a strategy state that does not fit."""


StrategyBuilder = Callable[[FederationConfig, dict[str, Any]], Strategy]
# Builders `(federation_config, common_kwargs) -> Strategy`, by name: `@register_strategy(name)`.
STRATEGIES: Registry[StrategyBuilder] = Registry("strategy")
register_strategy = STRATEGIES.register


def create_strategy(config: FederationConfig, num_sites: int) -> Strategy:
    """The Flower strategy named by `config.strategy`, sampling `fraction_train` of the sites.

    Client-side evaluation is off (fraction_evaluate 0): evaluation is central.
    """
    builder = STRATEGIES.get(config.strategy)
    minimum = max(1, round(config.fraction_train * num_sites))
    common = {
        "fraction_train": config.fraction_train,
        "fraction_evaluate": 0.0,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": 0,
        "min_available_nodes": num_sites,
    }
    return builder(config, common)


@register_strategy("fedavg")
def _fedavg(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedAvg(**common)


@register_strategy("fedprox")
def _fedprox(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedProx(**common, proximal_mu=config.proximal_mu)


@register_strategy("fedadam")
def _fedadam(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedAdam(**common, eta=config.server_lr)


@register_strategy("fedyogi")
def _fedyogi(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedYogi(**common, eta=config.server_lr)


@register_strategy("fedavgm")
def _fedavgm(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedAvgM(
        **common, server_learning_rate=config.server_lr, server_momentum=config.server_momentum
    )


@register_strategy("fedmedian")
def _fedmedian(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedMedian(**common)


@register_strategy("fedtrimmedavg")
def _fedtrimmedavg(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return FedTrimmedAvg(**common, beta=config.trimmed_beta)


@register_strategy("krum")
def _krum(config: FederationConfig, common: dict[str, Any]) -> Strategy:
    return Krum(**common, num_malicious_nodes=config.num_malicious)


# ---------------------------------------------------------------------------------------------
# Server-side optimiser state, flattened to named numpy arrays for checkpoints

# Attributes of Flower strategies that change from round to round (all others are settings).
STATE_ATTRIBUTES = ("current_arrays", "m_t", "v_t", "momentum_vector")


def strategy_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The strategy's round-to-round state as "<attribute>/<kind>/<key>" -> array.

    kind is "record" (an ArrayRecord, e.g. FedAvgM's current arrays), "dict" (FedAdam's
    moments) or "list" (FedAvgM's momentum vector).
    """
    state: dict[str, np.ndarray] = {}
    for attribute in STATE_ATTRIBUTES:
        value = getattr(strategy, attribute, None)
        if value is None:
            continue
        if isinstance(value, ArrayRecord):
            items, kind = ((k, a.numpy()) for k, a in value.items()), "record"
        elif isinstance(value, dict):
            items, kind = value.items(), "dict"
        elif isinstance(value, list):
            items, kind = ((f"{i:06d}", a) for i, a in enumerate(value)), "list"
        else:
            raise StrategyError(f"cannot save strategy state '{attribute}' of type {type(value)}")
        for key, array in items:
            state[f"{attribute}/{kind}/{key}"] = np.asarray(array)
    return state


def load_strategy_state(strategy: Strategy, state: dict[str, np.ndarray]) -> None:
    """Put state written by `strategy_state` back into a freshly built strategy."""
    grouped: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for name, array in state.items():
        attribute, kind, key = name.split("/", 2)
        if attribute not in STATE_ATTRIBUTES or kind not in ("record", "dict", "list"):
            raise StrategyError(f"unknown strategy state entry '{name}'")
        grouped.setdefault((attribute, kind), {})[key] = array
    for (attribute, kind), values in grouped.items():
        if not hasattr(strategy, attribute):
            raise StrategyError(
                f"the checkpoint holds '{attribute}' state, which {type(strategy).__name__} does "
                "not have: resume with the strategy the run was started with"
            )
        if kind == "record":
            value: Any = ArrayRecord({key: Array(array) for key, array in values.items()})
        elif kind == "list":
            value = [values[key] for key in sorted(values)]
        else:
            value = dict(values)
        setattr(strategy, attribute, value)
