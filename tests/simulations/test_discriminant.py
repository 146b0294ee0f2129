"""`latentveil discriminant`: the closed-form anonymizer of a prepared run's sites, fitted from
their summed moments, evaluated with the run's protocol and chosen on validation."""

import json

import numpy as np
import pytest
import torch

from common.discriminant import ClassMoments, fit_discriminant
from common.evaluation import EvaluationSet
from common.sitedata import load_site_data
from edge_export.artifact import adapter_from_run, run_config
from simulations.cli import main
from simulations.simulate import world_dir_of
from tests.paths import CONFIG_DIR
from tests.simulations.test_simulate import TINY as SIMULATE_TINY

pytestmark = pytest.mark.integration

# test_simulate's tiny world and random encoder, two fast attackers
TINY = [*SIMULATE_TINY, "evaluation.attackers=mlp,logistic"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    run = tmp_path_factory.mktemp("prepared") / "run"
    args = ["prepare", "--config", str(CONFIG_DIR / "tiny.yaml"), "--out", str(run), "--quiet"]
    for override in TINY:
        args += ["--set", override]
    assert main(args) == 0
    return run


def chosen_by_the_rule(fits: list[dict]) -> int:
    """The run's rule, from the table's own numbers: the lowest val privacy among qualifying
    fits, else the smallest shortfall."""
    ok = [i for i, f in enumerate(fits) if f["qualifies"]]
    if ok:
        return min(ok, key=lambda i: fits[i]["privacy_val"])
    return min(range(len(fits)), key=lambda i: fits[i]["shortfall"])


def test_the_sites_moments_fit_an_adapter_that_ships_like_a_runs(prepared, tmp_path, capsys):
    out = tmp_path / "disc"
    code = main(["discriminant", str(prepared), "--out", str(out), "--shrinkage", "0.001,0.5",
                 "--quiet"])  # fmt: skip
    assert code == 0
    assert "written to" in capsys.readouterr().out
    result = json.loads((out / "discriminant.json").read_text())
    assert [f["shrinkage"] for f in result["fits"]] == [0.001, 0.5]
    assert result["selected"] == chosen_by_the_rule(result["fits"])
    config = run_config(prepared)
    # the pooled moments are the sum of the three sites' (what one round of sums delivers)
    sites = [f"site_{i:02d}" for i in range(3)]
    world = world_dir_of(config, prepared)
    data = [
        load_site_data(world / s, prepared / "features" / f"{s}.h5", ["ar"], "train")["ar"]
        for s in sites
    ]
    assert result["clips"] == {
        s: int(np.prod(d.clip_features.shape[:2])) for s, d in zip(sites, data, strict=True)
    }
    pooled = ClassMoments.of_clips(
        np.concatenate([d.clip_features for d in data]),
        np.concatenate([d.labels["action"] for d in data]),
        config.heads.num_actions,
    )
    assert result["clips_per_class"] == [int(c) for c in pooled.counts]
    directions = int((pooled.counts > 0).sum()) - 1
    assert result["directions"] == directions
    # the folder is a run folder: its adapter.npz, built with its config.yaml, is the chosen fit
    shipped = run_config(out)
    assert (shipped.anonymizer.layers, shipped.anonymizer.bottleneck) == (0, directions)
    evaluation_set = EvaluationSet.load(out / "evaluation_set.npz")
    adapter = adapter_from_run(out, evaluation_set.dim)
    fit = fit_discriminant(pooled, directions, result["fits"][result["selected"]]["shrinkage"])
    clips = evaluation_set.tasks["ar"].splits["test"].clips[:5]
    with torch.no_grad():
        released = adapter(torch.as_tensor(clips, dtype=torch.float32)).numpy()
    u = fit.basis()
    expected = fit.mean + (clips - fit.mean) @ u @ u.T
    np.testing.assert_allclose(released, expected, atol=1e-4)
    table = (out / "discriminant.md").read_text()
    assert "| raw |" in table and "(chosen)" in table
    # task-privacy reads it as it reads a run's folder
    assert main(["task-privacy", str(out), "--out", str(tmp_path / "tp"), "--tasks", "ar",
                 "--quiet"]) == 0  # fmt: skip


def test_more_directions_than_the_classes_give_is_refused_before_any_work(prepared, tmp_path,
                                                                          capsys):  # fmt: skip
    out = tmp_path / "disc"
    code = main(["discriminant", str(prepared), "--out", str(out), "--directions", "99",
                 "--quiet"])  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at most" in err[0] and "asked for 99" in err[0]
    assert not out.exists()
