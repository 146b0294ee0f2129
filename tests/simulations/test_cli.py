"""Tests for the `latentveil` command line: subcommands, clear errors, end-to-end small runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import load_config, save_config
from common.features import FeatureStore
from common.layout import RunLayout
from simulations.cli import DEFAULT_CONFIG, build_parser, main
from simulations.simulate import SimulationError, check_run_folder
from tests.paths import CONFIG_DIR


def test_help_lists_only_working_subcommands(capsys):
    _, handlers = build_parser()
    assert set(handlers) == {
        "config",
        "world",
        "extract",
        "store",
        "pretrain-encoder",
        "leakage",
        "prepare",
        "simulate",
        "deploy-local",
        "certs",
        "frontier",
        "seeds",
        "crossfit",
        "task-privacy",
        "discriminant",
        "ablate",
        "export",
        "anonymize",
    }
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in handlers:
        assert name in out


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "config", "--set", "train.lr=0.5"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "lr: 0.5" in result.stdout


def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path):
    assert main(["config", "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentveil config: error: unknown config key 'train.lrr'")
    assert "Traceback" not in err
    assert main(["extract", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "f.h5")]) == 2
    assert "no such video file or folder" in capsys.readouterr().err


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"latentveil {version('latentveil')}"


def test_a_bug_still_ends_in_one_line_unless_debugging(capsys, monkeypatch):
    def broken(config):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr("simulations.simulate.check_runnable", broken)
    monkeypatch.delenv("LATENTVEIL_DEBUG", raising=False)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("latentveil config: error: RuntimeError: a bug over two lines")
    assert len(err.splitlines()) == 1 and "LATENTVEIL_DEBUG=1" in err
    monkeypatch.setenv("LATENTVEIL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["config"])


def test_an_unknown_strategy_stops_a_run_before_it_writes_anything(capsys, tmp_path):
    run = tmp_path / "run"
    args = ["simulate", "--out", str(run), "--quiet", "--set", "federation.strategy=fedfoo"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'fedfoo'; registered: " in err and "fedavg" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
    # a value out of range is refused by `latentveil config` already
    assert main(["config", "--set", "federation.rounds=-3"]) == 2
    assert "'federation.rounds' must be at least 1" in capsys.readouterr().err


def test_config_out_writes_resolved_yaml(tmp_path):
    assert main(["config", "--set", "federation.rounds=3", "--out", str(tmp_path / "c.yaml")]) == 0
    assert "rounds: 3" in (tmp_path / "c.yaml").read_text()


def test_world_then_extract_a_dataset(tmp_path, capsys):
    world = tmp_path / "world"
    assert main(["world", "--preset", "tiny", "--sites", "2", "--out", str(world), "--quiet"]) == 0
    assert "world ready" in capsys.readouterr().out
    store = tmp_path / "privacy.h5"
    args = ["extract", "--data", str(world), "--datasets", "central/privacy", "--out", str(store)]
    args += ["--quiet", "--set", "encoder.path=", "--set", "encoder.dim=16"]
    assert main(args) == 0
    manifest = [
        json.loads(line)
        for line in (world / "central/privacy/manifest.jsonl").read_text().splitlines()
    ]
    with FeatureStore(store) as features:
        assert features.video_ids() == sorted(entry["video_id"] for entry in manifest)
        assert features.settings.dim == 16
    # Another encoder (another seed) on the same store is refused with a clear message.
    assert main([*args, "--set", "encoder.seed=5"]) == 2
    assert "holds features of encoder" in capsys.readouterr().err


def test_the_run_commands_default_to_the_embedded_default_config():
    parser, _ = build_parser()
    for command in ("simulate", "prepare", "ablate", "leakage", "deploy-local"):
        args = parser.parse_args([command, "--out", "x"])
        assert Path(args.config) == DEFAULT_CONFIG == CONFIG_DIR / "default.yaml"
    assert parser.parse_args(["config"]).config is None  # the schema's defaults


def fake_run(folder: Path, finished: bool) -> Path:
    """A run folder's files as a run leaves them (contents do not matter here)."""
    layout = RunLayout(folder)
    (folder / "world").mkdir(parents=True)
    (folder / "world" / "world.json").write_text("{}")
    save_config(load_config(DEFAULT_CONFIG), layout.config)
    layout.checkpoint.write_bytes(b"round 3")
    if finished:
        layout.report_json.write_text("{}")
        layout.adapter.write_bytes(b"adapter")
    return folder


def test_a_run_folder_is_never_restarted_silently(tmp_path, capsys):
    run = fake_run(tmp_path / "run", finished=True)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["simulate", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run (checkpoint.npz)" in err and "--overwrite" in err
    assert main(["prepare", "--out", str(run), "--quiet"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    # a resumed run keeps its config: another one is refused, the same one is harmless
    args = ["simulate", "--out", str(run), "--resume", "--set", "world.seed=1"]
    assert main(args) == 2
    assert "cannot change a run half-way" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert check_run_folder(run, resume=True, overwrite=False, config_given=False) == "finished"


def test_overwrite_removes_the_old_run_and_keeps_world_and_features(tmp_path):
    run = fake_run(tmp_path / "run", finished=False)
    layout = RunLayout(run)
    with pytest.raises(SimulationError, match="unfinished run"):
        check_run_folder(run, resume=False, overwrite=False, config_given=False)
    assert check_run_folder(run, resume=True, overwrite=False, config_given=False) == "resume"
    assert check_run_folder(run, resume=False, overwrite=True, config_given=False) == "new"
    assert not layout.checkpoint.exists()
    assert (run / "world" / "world.json").is_file() and layout.config.is_file()


def test_store_shows_what_a_feature_store_holds_and_exports_it(tmp_path, capsys):
    import numpy as np

    from common.config import EncoderConfig, FeaturesConfig
    from common.encoders import create_encoder
    from common.features import VideoItem, extract_features
    from tests.edge_export.generated import write_video

    videos = [VideoItem(f"v{i}", write_video(tmp_path / f"v{i}.mp4", 16 * (i + 1), seed=i))
              for i in range(2)]  # fmt: skip
    encoder = create_encoder(EncoderConfig(path="", frame_size=32, dim=16))
    store = tmp_path / "feats.h5"
    extract_features(videos, encoder, store, FeaturesConfig(eval_clips=0), progress=False)
    out = tmp_path / "npy"
    assert main(["store", str(store), "--list", "--export-npy", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 videos, 3 clip features (1-2 per video)" in printed
    assert f"encoder_id: {encoder.encoder_id}" in printed and "(raw features)" in printed
    assert "  v1: 2 clips" in printed
    assert np.load(out / "v1.npy").shape == (2, 16)
    assert main(["store", str(tmp_path / "none.h5")]) == 2
