"""The same config and seed give the same shipped adapter, bit for bit (Flower's Simulation
Engine and the centralized runner)."""

import numpy as np
import pytest

from common.config import load_config
from common.evaluation import EvaluationSet
from common.layout import RunLayout
from common.weights import shareable_state
from server.rounds import initial_model
from simulations.cli import main
from tests.paths import CONFIG_DIR

pytestmark = pytest.mark.integration

# The tiny config, shipping the last round (it may otherwise select the identity round 0),
# evaluating only the last round with a short suite (evaluation does not touch the arrays).
# The sites co-train AD too: its head has dropout, which draws from torch's global generator.
TINY = [
    "--config", str(CONFIG_DIR / "tiny.yaml"),
    "--set", "tasks.seen={ar: 1.0, tad: 1.0, ad: 1.0}",
    "--set", "evaluation.select=last",
    "--set", "evaluation.every=2",
    "--set", "evaluation.attackers=mlp,logistic",
]  # fmt: skip


def run(out, *extra: str) -> dict[str, np.ndarray]:
    assert main(["simulate", "--out", str(out), "--quiet", *TINY, *extra]) == 0
    with np.load(RunLayout(out).adapter) as shipped:
        return {name: shipped[name] for name in shipped.files}


@pytest.mark.parametrize("mode", ["federated", "centralized"])
def test_two_runs_with_the_same_seed_ship_bit_identical_adapters(mode, tmp_path):
    first = run(tmp_path / "a", "--set", f"federation.mode={mode}")
    world = str(RunLayout(tmp_path / "a").default_world)
    second = run(tmp_path / "b", "--set", f"federation.mode={mode}", "--set", f"world.dir={world}")
    assert list(first) == list(second)
    for name, array in first.items():
        assert array.tobytes() == second[name].tobytes(), name
    # The arrays were trained: they are not the initial ones.
    layout = RunLayout(tmp_path / "a")
    initial = shareable_state(
        initial_model(load_config(layout.config), EvaluationSet.load(layout.evaluation_set).dim)
    )
    assert any(not np.array_equal(initial[name], array) for name, array in first.items())
