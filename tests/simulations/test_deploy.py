"""`latentveil deploy-local`: a real SuperLink and one SuperNode per site on 127.0.0.1."""

import json

import h5py
import pytest

from common.layout import RunLayout
from simulations.cli import main
from simulations.simulate import _run_processes
from tests.paths import CONFIG_DIR

pytestmark = pytest.mark.integration


def test_a_local_deployment_runs_the_app_and_every_site_encodes_its_own_videos(tmp_path):
    run = tmp_path / "run"
    args = ["deploy-local", "--config", str(CONFIG_DIR / "tiny.yaml"), "--sites", "3",
            "--insecure", "--out", str(run), "--quiet",
            "--set", "evaluation.attackers=mlp,logistic"]  # fmt: skip
    assert main(args) == 0
    layout = RunLayout(run)
    report = json.loads(layout.report_json.read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert all(r["sites_aggregated"] == 3 for r in report["rounds"][1:])
    assert layout.adapter.is_file()
    # nothing was extracted for the sites beforehand: each encoded its own videos, through
    # its edge encoder, and its store says with which backend
    for site in ("site_00", "site_01", "site_02"):
        with h5py.File(layout.site_store(site)) as store:
            assert len(store["videos"]) > 0 and store.attrs["backend"] in {"openvino", "onnx"}
        assert (run / "deploy" / f"{site}.log").is_file()
    assert (run / "deploy" / "superlink.db").is_file()
    assert _run_processes(layout.flower_home.resolve()) == []  # everything it started is gone
