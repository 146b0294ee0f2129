"""Reading a run's settings out of a Flower context (run config and node config).

Flower's run config is flat; the project's config is a tree. The resolved RunConfig travels
as one YAML string under `config-yaml`, so the ServerApp and every ClientApp of a run see
exactly the config `latentveil simulate` resolved. With `flwr run .` and no `config-yaml`, the
apps read `<run-dir>/config.yaml`, which `latentveil prepare` wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from common.config import ConfigError, RunConfig, from_dict, registry_names_unchecked, to_dict
from common.errors import LatentveilError
from common.layout import RunLayout

# Run-config keys the apps read, with their defaults (mirrored in pyproject's
# [tool.flwr.app.config] so that `flwr run .` works without any --run-config).
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "config-yaml": "",
    "run-dir": "runs/flwr",
    "world-dir": "",
    "resume": False,
}


class RunSettingsError(LatentveilError):
    """A Flower run or node config that does not name what the apps need."""


def run_config_from_context(
    run_config: Mapping[str, Any], *, check_names: bool = True
) -> RunConfig:
    """The RunConfig carried in `config-yaml`; when that is empty, the run folder's
    config.yaml (written by `latentveil prepare`), else the defaults.

    `check_names=False` skips checking encoder and task names against their registries
    (common.config.registry_names_unchecked): for the site's mods, which must not import torch.
    """
    text = str(run_config.get("config-yaml", ""))
    if not text.strip():
        prepared = RunLayout(run_dir(run_config)).config
        if not prepared.is_file():
            return RunConfig()
        text = prepared.read_text()
    return _parse(text, check_names)


@lru_cache(maxsize=8)
def _parse(text: str, check_names: bool) -> RunConfig:
    # Every mod and handler of a site's message reads the config: parsed once per process
    # (RunConfig is frozen, so one instance can serve them all).
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"run config 'config-yaml' is not valid YAML: {error}") from error
    if check_names:
        return from_dict(RunConfig, data)
    with registry_names_unchecked():
        return from_dict(RunConfig, data)


def config_as_yaml(config: RunConfig) -> str:
    """The YAML string `run_config_from_context` reads back."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def run_dir(run_config: Mapping[str, Any]) -> Path:
    return Path(str(run_config.get("run-dir", RUN_CONFIG_DEFAULTS["run-dir"])))


def world_dir(run_config: Mapping[str, Any], config: RunConfig) -> Path:
    """The world root: run config `world-dir`, else config world.dir, else <run-dir>/world."""
    explicit = str(run_config.get("world-dir", "")) or config.world.dir
    return RunLayout(run_dir(run_config)).world(explicit)


def site_paths(
    node_config: Mapping[str, Any], run_config: Mapping[str, Any], config: RunConfig
) -> tuple[str, Path, Path]:
    """(site id, site folder, feature store) of this node.

    Deployment: node config `site-dir` (and optionally `feature-store`). Simulation: node
    config `partition-id` N is the world's site_NN.
    """
    if "site-dir" in node_config:
        site = Path(str(node_config["site-dir"]))
        store = Path(str(node_config.get("feature-store", site / "features.h5")))
        return site.name, site, store
    if "partition-id" in node_config:
        site_id = f"site_{int(node_config['partition-id']):02d}"
        site = world_dir(run_config, config) / site_id
        return site_id, site, RunLayout(run_dir(run_config)).site_store(site_id)
    raise RunSettingsError(
        "this SuperNode has neither 'site-dir' nor 'partition-id' in its node config; start it "
        'with --node-config "site-dir=/path/to/site"'
    )
