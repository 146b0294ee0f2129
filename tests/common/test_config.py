"""Tests for the config schema, YAML loading and `key=value` overrides."""

import dataclasses

import pytest
import yaml

from common.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_config,
    save_config,
    to_dict,
)
from tests.paths import CONFIG_DIR


def test_defaults_match_the_paper():
    cfg = RunConfig()
    assert (cfg.loss.w_lc, cfg.loss.w_t, cfg.loss.w_b, cfg.loss.tau) == (100.0, 1.0, 1.0, 0.1)
    assert (cfg.anonymizer.layers, cfg.anonymizer.heads) == (3, 8)


def test_yaml_and_overrides_are_coerced_to_field_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3.0e-4\n  epochs: 2\ntasks:\n  seen: {ar: 2}\n")
    cfg = load_config(path, ["train.epochs=5", "loss.w_lc=10", "world.dir=/x/y", "tasks.seen.ar=3"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.loss.w_lc == 10.0 and isinstance(cfg.loss.w_lc, float)
    assert cfg.world.dir == "/x/y"
    assert cfg.tasks.seen == {"ar": 3.0} and isinstance(cfg.tasks.seen["ar"], float)


def test_unknown_key_names_the_key_and_the_closest_valid_one(tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.lrr'.*did you mean 'train\.lr'"):
        load_config(None, ["train.lrr=1"])
    path = tmp_path / "bad.yaml"
    path.write_text("federation:\n  strategi: fedavg\n")
    with pytest.raises(ConfigError, match=r"'federation\.strategi'.*'federation\.strategy'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown config key 'tran'.*'train'"):
        load_config(None, ["tran.lr=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=two", "expects an integer"),
        ("train.epochs=1.5", "expects an integer"),
        ("loss.tau=abc", "expects a number"),
        ("train", "key=value"),
        ("train=3", "is a section"),
        ("train.lr.x=3", "not a section"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_config_round_trips_through_disk(tmp_path):
    cfg = load_config(None, ["train.lr=0.002", "federation.rounds=7", "tasks.evaluated.ar=5"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    # A plain YAML file a person can read: every section, the overrides as written.
    written = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert set(written) == {field.name for field in dataclasses.fields(RunConfig)}
    assert (written["train"]["lr"], written["federation"]["rounds"]) == (0.002, 7)
    assert written["tasks"]["evaluated"] == {"ar": 5}


def test_overrides_do_not_mutate_their_input():
    data = {"train": {"lr": 0.1}}
    out = apply_overrides(data, ["train.lr=0.5"])
    assert data == {"train": {"lr": 0.1}} and out["train"]["lr"] == 0.5


def leaves(data: dict, prefix: str = "") -> dict:
    """Nested mappings as dotted key -> value, e.g. {"train.lr": 0.001}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_runs_with_the_values_it_names(path):
    resolved = leaves(to_dict(load_config(path)))
    written = leaves(yaml.safe_load(path.read_text()))
    assert written, f"{path.name} sets nothing"
    for key, value in written.items():
        assert resolved[key] == value, (
            f"{path.name}: {key} is {value!r} but resolves to {resolved[key]!r}"
        )
    # Its first lines give the command that runs it.
    header = path.read_text().splitlines()[:5]
    assert any(f"--config simulations/configs/{path.name}" in line for line in header), header


def test_a_mapping_entry_can_be_set_or_removed_from_the_command_line():
    assert load_config(None, ["tasks.evaluated.ar=0.5"]).tasks.evaluated == {"ar": 0.5}
    with pytest.raises(ConfigError, match="tasks.evaluated.*at least one task"):
        load_config(None, ["tasks.evaluated.ar=null"])
    with pytest.raises(ConfigError, match="expects a mapping"):
        load_config(None, ["tasks.seen=ar"])
    with pytest.raises(ConfigError, match="tasks.seen.ar.*expects a number"):
        load_config(None, ["tasks.seen.ar=heavy"])
