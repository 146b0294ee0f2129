"""`latentveil discriminant`: the closed-form anonymizer of a prepared run's sites, fitted from
their summed moments, evaluated with the run's protocol and chosen on validation."""

import json

import numpy as np
import pytest
import torch

from client.mods import audit_path
from common import wire
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
    assert result["tasks"] == ["ar"]  # the run trains AR alone
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
    assert result["clips_per_task"] == {"ar": int(pooled.counts.sum())}
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
    # a task whose videos the run did not encode
    assert main(["discriminant", str(prepared), "--out", str(out), "--tasks", "ar,tad",
                 "--quiet"]) != 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tad" in err[0] and "seen tasks" in err[0]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# anonymizer.init discriminant: the same fit, from moments each site sends before round 1

START = ["federation.rounds=1", "anonymizer.init=discriminant", "anonymizer.bottleneck=2"]
MOMENT_NAMES = {"moments.counts", "moments.sums", "moments.second"}


def started_run(prepared, run, *extra: str):
    args = ["simulate", "--out", str(run), "--quiet", "--config", str(CONFIG_DIR / "tiny.yaml")]
    for override in [*TINY, *START, f"world.dir={prepared / 'world'}", *extra]:
        args += ["--set", override]
    assert main(args) == 0
    return json.loads((run / "report.json").read_text())


SEEN = "tasks.seen={ar: 1.0, tad: 1.0}"  # the TAD videos' segments join the moments


def moments_of_the_sites(run) -> dict[str, ClassMoments]:
    """Each site's AR clips under their video's action and its TAD clips whose centre lies in
    one segment under that segment's action, computed here clip by clip."""
    config = run_config(run)
    world = world_dir_of(config, run)
    out = {}
    for site in ("site_00", "site_01", "site_02"):
        data = load_site_data(world / site, run / "features" / f"{site}.h5", ["ar", "tad"],
                              "train")  # fmt: skip
        x = list(data["ar"].clip_features.reshape(-1, config.encoder.dim))
        y = list(np.repeat(data["ar"].labels["action"], data["ar"].clip_features.shape[1]))
        tad = data["tad"]
        num_clips = tad.clip_features.shape[1]
        for video, segments in zip(tad.clip_features, tad.labels["segments"], strict=True):
            for k in range(num_clips):
                centre = (k + 0.5) / num_clips
                inside = [int(a) for s, e, a in segments if a >= 0 and s <= centre < e]
                if len(inside) == 1:
                    x.append(video[k])
                    y.append(inside[0])
        assert len(y) > data["ar"].clip_features.shape[0] * data["ar"].clip_features.shape[1]
        out[site] = ClassMoments.of_labelled(np.stack(x), np.array(y), config.heads.num_actions)
    return out


def test_a_federated_run_starts_from_the_discriminant_of_the_moments_its_sites_sent(
    prepared, tmp_path
):
    run = tmp_path / "run"
    report = started_run(prepared, run, SEEN)
    start = report["initialisation"]
    per_site = moments_of_the_sites(run)
    assert start["kind"] == "discriminant" and start["left_out"] == []
    assert start["clips"] == {site: int(m.counts.sum()) for site, m in per_site.items()}
    pooled = per_site["site_00"] + per_site["site_01"] + per_site["site_02"]
    fit = fit_discriminant(pooled, 2, run_config(run).anonymizer.shrinkage)
    np.testing.assert_allclose(start["ratios"], fit.ratios, rtol=1e-6)
    # round 0, the projection itself, is evaluated and may be selected like any round
    assert report["rounds"][0]["privacy_cmap"] is not None
    assert report["rounds"][0]["privacy_cmap"] != report["baseline"]["privacy_cmap"]
    assert report["selection"]["round"] in (0, 1)
    # the moments crossed the wire once, as a query: in the server's record and each site's
    server = [e for e in wire.read(run / "wire.jsonl") if e["kind"] == "query"]
    assert sorted((e["site"], e["direction"]) for e in server) == sorted(
        (s, d) for s in per_site for d in ("down", "up")
    )
    for entry in server:
        assert {name for _, name, *_ in entry["arrays"]} == MOMENT_NAMES
        assert entry["round"] == 0 and not entry["outside_allowlist"]
    # and they are round 0's traffic in the report
    for direction in ("down", "up"):
        sent = sum(e["bytes"] for e in server if e["direction"] == direction)
        assert report["rounds"][0][f"bytes_{direction}"] == sent > 0
    for site in per_site:
        own = wire.read(audit_path(run / "features" / f"{site}.h5"))
        sent = [e for e in own if e["kind"] == "query" and e["direction"] == "up"]
        assert len(sent) == 1 and sent[0]["refused"] is None
        assert {name for _, name, *_ in sent[0]["arrays"]} == MOMENT_NAMES
        trained = [e for e in own if e["kind"] == "train" and e["direction"] == "up"]
        assert trained and all(
            not {name for _, name, *_ in e["arrays"]} & MOMENT_NAMES for e in trained
        )
    # centralized, the pool is one site with the same clips: the same fit
    pooled_report = started_run(prepared, tmp_path / "pooled", SEEN, "federation.mode=centralized")
    assert pooled_report["initialisation"]["clips"] == {"pooled": int(pooled.counts.sum())}
    np.testing.assert_allclose(pooled_report["initialisation"]["ratios"], fit.ratios, rtol=1e-6)
