"""Tests for the config schema, YAML loading and `key=value` overrides."""

import dataclasses

import pytest
import yaml

from common.config import (
    WORLD_PRESETS,
    ConfigError,
    RunConfig,
    apply_overrides,
    from_dict,
    load_config,
    registry_names_unchecked,
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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("federation.rounds=-1", r"'federation\.rounds' must be at least 1"),
        ("federation.rounds=0", r"'federation\.rounds' must be at least 1"),
        ("train.lr=-0.001", r"'train\.lr' must be greater than 0"),
        ("train.lr=nan", r"'train\.lr' expects a finite number"),
        ("federation.mode=banana", r"'federation\.mode' must be one of federated, centralized"),
        ("features.dtype=int8", r"'features\.dtype' must be one of float16, float32"),
        ("world.preset=huge", r"'world\.preset' must be one of tiny, default, large"),
        ("encoder.name=resnet", r"unknown encoder 'resnet'; registered encoders: .*tiny3d"),
        ("world.sites=0", r"'world\.sites' must be at least 1"),
        ("federation.fraction_train=7", r"'federation\.fraction_train' .* in \(0, 1\]"),
        ("federation.fraction_train=0", r"'federation\.fraction_train' .* in \(0, 1\]"),
        ("evaluation.every=0", r"'evaluation\.every' must be at least 1"),
        ("evaluation.stills=every", r"'evaluation\.stills' must be one of selected, evaluated"),
        ("features.clip_step=0", r"'features\.clip_step' must be at least 1"),
        ("features.static_clips=0", r"'features\.static_clips' must be at least 2"),
        ("train.batch_size=0", r"'train\.batch_size' must be at least 2"),
        ("train.batch_size=1", r"'train\.batch_size' must be at least 2"),
        ("loss.tau=0", r"'loss\.tau' must be greater than 0"),
        ("loss.w_b=-1", r"'loss\.w_b' must be at least 0"),
        ("loss.lc_motion=-0.5", r"'loss\.lc_motion' must be at least 0"),
        ("loss.lc_tail=0", r"'loss\.lc_tail' must be in \(0, 1\]"),
        ("loss.lc_tail=1.5", r"'loss\.lc_tail' must be in \(0, 1\]"),
        (
            "loss.budget_surgery_scope=adapter",
            r"'loss\.budget_surgery_scope' must be one of tasks, objective, each_task",
        ),
        ("loss.budget_combine=mean", r"'loss\.budget_combine' must be one of average, sum"),
        ("loss.budget_tasks=[ar, faces]", r"'loss\.budget_tasks' names an unknown task 'faces'"),
        ("loss.budget_tasks=[]", r"'loss\.budget_tasks' needs at least one task"),
        ("train.task_schedule=never", r"'train\.task_schedule' must be one of repeat, once"),
        ("anonymizer.dropout=1", r"'anonymizer\.dropout' must be in \[0, 1\)"),
        ("federation.trimmed_beta=0.5", r"'federation\.trimmed_beta' must be in \[0, 0\.5\)"),
        ("evaluation.probe_epochs=0", r"'evaluation\.probe_epochs' must be at least 1"),
        ("heads.num_actions=1", r"'heads\.num_actions' must be at least 2"),
    ],
)
def test_values_that_cannot_work_are_refused_when_the_config_loads(override, message):
    # `latentveil config` used to print these as valid; runs failed minutes later, or inside
    # the Flower subprocess.
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG_DIR / "default.yaml", [override])


def test_the_budget_covers_only_seen_tasks_videos():
    load_config(CONFIG_DIR / "default.yaml", ["loss.budget_tasks=tad"])  # default sees tad
    with pytest.raises(ConfigError, match=r"'loss\.budget_tasks' names tad, which 'tasks\.seen'"):
        load_config(CONFIG_DIR / "default.yaml", ["loss.budget_tasks=ar,tad", "tasks.seen={ar: 1}"])


def test_names_go_unchecked_only_inside_registry_names_unchecked():
    # A deployed site's mods read the server-checked config without importing the registries
    # (common.runconfig); everywhere else an unknown encoder or task is refused as it loads.
    overrides = ["encoder.name=resnet", "tasks.seen={ar: 1.0, juggling: 1.0}"]
    with registry_names_unchecked():
        config = load_config(None, overrides)
    assert config.encoder.name == "resnet" and "juggling" in config.tasks.seen
    with pytest.raises(ConfigError, match="unknown encoder 'resnet'"):
        load_config(None, overrides)
    with pytest.raises(ConfigError, match="unknown task 'juggling'"):
        load_config(None, overrides[1:])


def test_the_world_presets_the_config_accepts_are_the_worlds_presets():
    from simulations.world.presets import PRESETS

    assert set(WORLD_PRESETS) == set(PRESETS)


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


def test_a_discriminant_start_needs_action_labels_and_at_most_actions_minus_one_directions():
    base = {"anonymizer": {"init": "discriminant", "bottleneck": 7}}
    assert from_dict(RunConfig, base).anonymizer.shrinkage == 1e-3
    with pytest.raises(ConfigError, match="at most 7 directions"):
        from_dict(RunConfig, {"anonymizer": {"init": "discriminant", "bottleneck": 8}})
    for seen in ({"tad": 1.0}, {"ar": 0.0, "tad": 1.0}):  # no action head trained
        with pytest.raises(ConfigError, match="must train ar at a positive weight"):
            from_dict(RunConfig, {**base, "tasks": {"seen": seen}})
    with pytest.raises(ConfigError, match="'anonymizer.shrinkage'"):
        from_dict(RunConfig, {"anonymizer": {"shrinkage": float("nan")}})
