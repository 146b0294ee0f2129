"""Reading a generated world: world.json and the manifests of its datasets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.manifest import ManifestError, read_jsonl
from simulations.world.schema import WORLD_INFO_FILE, WORLD_VERSION, WorldError


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of one manifest.jsonl, in order."""
    path = Path(path)
    if not path.is_file():
        raise WorldError(f"no manifest at {path}; generate the world first (latentveil world)")
    try:
        return read_jsonl(path)
    except ManifestError as error:
        raise WorldError(f"{error}; regenerate the world") from None


@dataclass(frozen=True)
class World:
    """A generated world on disk: `info` is world.json; manifests are read on demand."""

    root: Path
    info: dict[str, Any]

    @property
    def sites(self) -> list[str]:
        """Client site ids ("site_00", ...); empty for a pre-training world."""
        return list(self.info["site_ids"])

    @property
    def purpose(self) -> str:
        return self.info["purpose"]

    @property
    def bias_action(self) -> str | None:
        return self.info["bias_action"]

    def datasets(self) -> list[str]:
        """The "group/dataset" keys this world holds, e.g. "site_00/ar", "central/privacy"."""
        return sorted(self.info["datasets"])

    def manifest(
        self, dataset: str, group: str = "central", split: str | None = None
    ) -> list[dict]:
        """Entries of one dataset of one group (a site id, "central" or "pretrain")."""
        key = f"{group}/{dataset}"
        if key not in self.info["datasets"]:
            raise WorldError(f"world {self.root} has no dataset {key!r}; it has {self.datasets()}")
        entries = read_manifest(self.root / self.info["datasets"][key]["manifest"])
        return [e for e in entries if split is None or e["split"] == split]

    def path(self, entry: dict[str, Any]) -> Path:
        """Absolute path of a manifest entry's file."""
        return self.root / entry["path"]


def load_world(path: str | os.PathLike) -> World:
    """Open a generated world (the folder holding world.json)."""
    root = Path(path)
    info_path = root / WORLD_INFO_FILE
    if not info_path.is_file():
        raise WorldError(
            f"{root} holds no complete world (no world.json); generate it with `latentveil world "
            f"--out {root}` (a run that was interrupted is completed by running it again)"
        )
    try:
        info = json.loads(info_path.read_text())
    except ValueError as error:
        raise WorldError(f"{info_path} is not valid JSON ({error}); regenerate the world") from None
    if info.get("version") != WORLD_VERSION:
        raise WorldError(
            f"{root} holds a world of format version {info.get('version')}, this code reads "
            f"version {WORLD_VERSION}; generate it again in a new folder"
        )
    return World(root, info)
