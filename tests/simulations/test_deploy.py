"""`latentveil deploy-local`: a real SuperLink and one SuperNode per site on 127.0.0.1."""

import json

import h5py
import pytest

from common.config import load_config
from common.layout import RunLayout
from simulations.cli import main
from simulations.deploy import deploy_local
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


def test_a_secured_deployment_refuses_a_supernode_whose_key_was_never_registered(tmp_path):
    config = load_config(CONFIG_DIR / "tiny.yaml", ["evaluation.attackers=mlp,logistic"])
    run = tmp_path / "run"
    report = deploy_local(config, run, sites=3, progress=False, unregistered=1)  # TLS + auth
    rounds = json.loads(report.read_text())["rounds"]
    assert [r["sites_aggregated"] for r in rounds[1:]] == [3, 3]  # the three registered sites
    certs = run / "deploy" / "certs"
    assert {p.name for p in certs.iterdir()} >= {"ca.crt", "superlink.crt", "site_00.key"}
    assert (certs / "site_00.key").stat().st_mode & 0o077 == 0  # private keys: owner only
    stranger = (run / "deploy" / "unregistered_0.log").read_text()
    assert "Failed to activate SuperNode" in stranger
    assert not RunLayout(run).site_store("unregistered_0").exists()  # it never trained
    registered = (run / "deploy" / "register.log").read_text()
    assert registered.count("registered successfully") == 3
