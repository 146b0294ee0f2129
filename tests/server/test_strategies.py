"""Tests for server.strategies: every registered strategy's state survives a checkpoint."""

from unittest.mock import Mock

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from common.config import FederationConfig
from server.checkpoints import ServerState, load_checkpoint, save_checkpoint
from server.federation import from_record, to_record
from server.strategies import STRATEGIES, create_strategy, load_strategy_state, strategy_state
from tests.fakes import train_reply

SITES = (1, 2, 3, 4, 5)  # five, so that FedTrimmedAvg trims and Krum has a choice

# Strategies with round-to-round server state (Flower's FedOpt moments, FedAvgM's momentum).
STATEFUL = {"fedadam", "fedyogi", "fedavgm"}


def initial_arrays() -> dict[str, np.ndarray]:
    # Not in alphabetical order and of different shapes: a state restored in another order
    # than the model's would be paired with the wrong arrays.
    rng = np.random.default_rng(0)
    return {
        "heads.ar.weight": rng.normal(size=(3, 4)).astype(np.float32),
        "adapter.norm.weight": rng.normal(size=4).astype(np.float32),
        "adapter.fc.weight": rng.normal(size=(2, 4)).astype(np.float32),
    }


def federation_config(strategy: str) -> FederationConfig:
    # Settings under which every strategy's state matters (FedAvgM keeps none without momentum).
    return FederationConfig(
        strategy=strategy, server_lr=0.1, server_momentum=0.9, proximal_mu=0.1, trimmed_beta=0.2
    )


@pytest.fixture
def grid() -> Grid:
    """configure_train only asks the grid which sites there are."""
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = list(SITES)
    return grid


def federated_round(strategy, server_round: int, arrays: dict[str, np.ndarray], grid) -> dict:
    """One round as server.federation runs it: configure, every site trains, aggregate."""
    strategy.configure_train(server_round, to_record(arrays), ConfigRecord(), grid)
    replies = []
    for node in SITES:
        # Each site moves the arrays its own way, with a drift shared by all (what momentum and
        # moments accumulate); sites report different numbers of examples.
        rng = np.random.default_rng([server_round, node])
        trained = {
            k: v + 0.05 + rng.normal(0, 0.1, v.shape).astype(v.dtype) for k, v in arrays.items()
        }
        replies.append(train_reply(trained, node, {"num-examples": 10 * node}, server_round))
    aggregated, _ = strategy.aggregate_train(server_round, replies)
    # As the round loop does: back to the model's dtypes (FedAdam / FedYogi compute in float64).
    return {k: v.astype(arrays[k].dtype) for k, v in from_record(aggregated).items()}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategy_restored_from_a_checkpoint_aggregates_like_the_one_that_saved_it(
    name, grid, tmp_path
):
    config = federation_config(name)
    original = create_strategy(config, num_sites=len(SITES))
    arrays = initial_arrays()
    for server_round in (1, 2):
        arrays = federated_round(original, server_round, arrays, grid)

    # Save the state as a run does after round 2, and resume from it in a fresh strategy.
    saved = strategy_state(original)
    assert bool(saved) == (name in STATEFUL), f"{name}: state {sorted(saved)}"
    save_checkpoint(tmp_path, ServerState(2, arrays, saved))
    restored = create_strategy(config, num_sites=len(SITES))
    load_strategy_state(restored, load_checkpoint(tmp_path).trainer_state)

    expected = federated_round(original, 3, arrays, grid)
    got = federated_round(restored, 3, arrays, grid)
    assert list(got) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
    if name in STATEFUL:
        # Guards the comparison above: without its state the strategy would aggregate otherwise.
        forgetful = federated_round(create_strategy(config, num_sites=len(SITES)), 3, arrays, grid)
        assert any(not np.allclose(forgetful[k], expected[k]) for k in expected), name
