"""Flower's own Message-API strategies behind one registry, chosen by `federation.strategy`.

Nothing here re-implements aggregation: each entry builds the Flower strategy with the settings
the config names. What the project adds is state handling: the server-side optimiser state of
FedAdam / FedYogi / FedAvgM (moments, momentum, current arrays) is read out and written back so
that `--resume` continues exactly where a run stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
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
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

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
    """The Flower strategy named by `config.strategy`, sampling `fraction_train` of the sites
    that are connected, as soon as `min_sites` of them are (0 = all).

    Client-side evaluation is off (fraction_evaluate 0): evaluation is central. With
    `dp_noise_multiplier` > 0 the strategy is wrapped in Flower's
    DifferentialPrivacyClientSideFixedClipping with its RDP accountant (`dp_strategy`).
    """
    builder = STRATEGIES.get(config.strategy)
    available = config.min_sites or num_sites
    common = {
        "fraction_train": config.fraction_train,
        "fraction_evaluate": 0.0,
        "min_train_nodes": max(1, round(config.fraction_train * available)),
        "min_evaluate_nodes": 0,
        "min_available_nodes": available,
    }
    if config.dp_noise_multiplier > 0:
        # The accountant's sensitivity is that of a uniform mean of clipped updates: every
        # site weighs the same (the sites send "unit-weight" = 1).
        common["weighted_by_key"] = "unit-weight"
        return dp_strategy(builder(config, common), config, num_sites)
    return builder(config, common)


def dp_strategy(strategy: Strategy, config: FederationConfig, num_sites: int) -> Strategy:
    """Flower's central DP with client-side fixed clipping around `strategy`, accounted by
    Flower's RdpAccountant (client-level (epsilon, delta), no sampling amplification, the
    population being the federation's sites). `num_sampled_clients` is set each round to the
    number of sites sampled (server.federation)."""
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=config.dp_delta,
            population_size=num_sites,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=config.dp_max_epsilon or None,
        )
    )
    return SampledDifferentialPrivacy(
        strategy,
        noise_multiplier=config.dp_noise_multiplier,
        clipping_norm=config.dp_clipping_norm,
        num_sampled_clients=num_sites,
        accountant=accountant,
    )


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


class SampledDifferentialPrivacy(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP, with the noise of each round calibrated to the
    number of sites that round samples (Flower fixes it once; sites that drop out before a
    round would otherwise make every later round fail its sample-size check). The accountant
    and the aggregation are Flower's: a round in which a sampled site sends no usable update
    is not aggregated, so it releases nothing and spends no epsilon."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[KEY_CLIPPING_NORM] = self.clipping_norm
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self.num_sampled_clients = max(1, len(messages))
        return self._prepare_accounting(server_round, messages)


# ---------------------------------------------------------------------------------------------
# Server-side optimiser state, flattened to named numpy arrays for checkpoints

# Attributes of Flower strategies that change from round to round (all others are settings).
STATE_ATTRIBUTES = ("current_arrays", "m_t", "v_t", "momentum_vector")


ACCOUNTANT_KEY = "accountant/json/state"


def _inner(strategy: Strategy) -> Strategy:
    """The configured strategy inside a DP wrapper (or the strategy itself)."""
    return getattr(strategy, "strategy", strategy)


def strategy_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The strategy's round-to-round state as "<attribute>/<kind>/<key>" -> array.

    kind is "record" (an ArrayRecord, e.g. FedAvgM's current arrays), "dict" (FedAdam's
    moments) or "list" (FedAvgM's momentum vector). A DP wrapper's accountant is one more
    entry, its JSON state as bytes.
    """
    state: dict[str, np.ndarray] = {}
    accountant = getattr(strategy, "accountant", None)
    if accountant is not None:
        text = json.dumps(accountant.state_dict())
        state[ACCOUNTANT_KEY] = np.frombuffer(text.encode(), dtype=np.uint8).copy()
    strategy = _inner(strategy)
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
    state = dict(state)
    accountant_state = state.pop(ACCOUNTANT_KEY, None)
    accountant = getattr(strategy, "accountant", None)
    if (accountant_state is None) != (accountant is None):
        raise StrategyError(
            "the checkpoint was made "
            + ("without" if accountant_state is None else "with")
            + " differential privacy and this run is configured "
            + ("with" if accountant is not None else "without")
            + " it: resume with the run's own settings"
        )
    if accountant is not None:
        try:
            accountant.load_state_dict(json.loads(bytes(accountant_state).decode()))
        except ValueError as error:
            raise StrategyError(f"the checkpoint's accountant does not fit: {error}") from None
    strategy = _inner(strategy)
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
