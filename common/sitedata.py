"""A camera site's own data: its manifests, its cached features, and training arrays from them.

A site folder holds one folder per dataset with a `manifest.jsonl` (one JSON object per file:
`video_id`, `path`, `split`, `labels`, ...). In the synthetic world `path` is relative to the
world root, the site folder's parent; a site's own folder works too. On first use the site
encodes its videos once with the frozen encoder into its HDF5 store (common.features); later
rounds read the cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import EncoderConfig, FeaturesConfig
from common.encoders import create_encoder
from common.errors import LatentveilError
from common.features import FeatureStore, VideoItem, extract_features


class SiteDataError(LatentveilError):
    """A site folder without the data it should hold."""


def read_site_manifest(site_dir: str | Path, dataset: str = "ar") -> list[dict]:
    """Entries of `<site_dir>/<dataset>/manifest.jsonl`, each with an absolute `file` path."""
    site_dir = Path(site_dir)
    path = site_dir / dataset / "manifest.jsonl"
    if not path.is_file():
        raise SiteDataError(f"site {site_dir} has no {dataset} manifest ({path} is missing)")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as error:
            raise SiteDataError(f"{path}:{number} is not a JSON line: {error}") from None
        for root in (site_dir.parent, site_dir, path.parent):
            if (root / entry["path"]).is_file():
                entry["file"] = root / entry["path"]
                break
        else:
            raise SiteDataError(f"{path}:{number}: file {entry['path']} not found under {site_dir}")
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class SiteArrays:
    """Cached features of one split of a site's AR videos, ready for training.

    clip_features (N, C, d): each video's non-overlapping clips; eval_clip_features (N, E, d);
    static_features (N, K, d); actions (N,).
    """

    video_ids: list[str]
    clip_features: np.ndarray
    eval_clip_features: np.ndarray
    static_features: np.ndarray
    actions: np.ndarray

    def __len__(self) -> int:
        return len(self.video_ids)


def ensure_site_features(
    site_dir: str | Path,
    store_path: str | Path,
    encoder_config: EncoderConfig,
    features_config: FeaturesConfig,
    progress: bool = False,
) -> Path:
    """Encode the site's AR videos into its store unless they are all there already."""
    entries = read_site_manifest(site_dir, "ar")
    store_path = Path(store_path)
    if store_path.is_file():
        with FeatureStore(store_path) as store:
            if all(entry["video_id"] in store for entry in entries):
                return store_path
    encoder = create_encoder(encoder_config)
    items = [VideoItem(entry["video_id"], entry["file"]) for entry in entries]
    extract_features(items, encoder, store_path, features_config, progress=progress)
    return store_path


def load_site_arrays(site_dir: str | Path, store_path: str | Path, split: str) -> SiteArrays:
    """The AR videos of one split joined with their cached features."""
    entries = [e for e in read_site_manifest(site_dir, "ar") if e["split"] == split]
    if not entries:
        raise SiteDataError(f"site {site_dir} has no AR videos in split '{split}'")
    with FeatureStore(store_path) as store:
        clips = [store.clip_features(e["video_id"]) for e in entries]
        lengths = {len(c) for c in clips}
        if len(lengths) != 1:
            # Trimmed clips of unequal length: keep the first C clips of each (C = the shortest).
            shortest = min(lengths)
            clips = [c[:shortest] for c in clips]
        return SiteArrays(
            video_ids=[e["video_id"] for e in entries],
            clip_features=np.stack(clips),  # (N, C, d)
            eval_clip_features=np.stack([store.eval_clip_features(e["video_id"]) for e in entries]),
            static_features=np.stack([store.static_features(e["video_id"]) for e in entries]),
            actions=np.array([e["labels"]["action"] for e in entries], dtype=np.int64),
        )


def pool_site_arrays(parts: list[SiteArrays]) -> SiteArrays:
    """Concatenate several sites' arrays (the centralized baseline trains on the pool)."""
    shortest = min(p.clip_features.shape[1] for p in parts)
    return SiteArrays(
        video_ids=[v for p in parts for v in p.video_ids],
        clip_features=np.concatenate([p.clip_features[:, :shortest] for p in parts]),
        eval_clip_features=np.concatenate([p.eval_clip_features for p in parts]),
        static_features=np.concatenate([p.static_features for p in parts]),
        actions=np.concatenate([p.actions for p in parts]),
    )


def as_tensors(arrays: SiteArrays) -> dict[str, torch.Tensor]:
    """float32 / int64 tensors of a SiteArrays, keyed by field name."""
    return {
        "clip_features": torch.from_numpy(arrays.clip_features.astype(np.float32)),
        "eval_clip_features": torch.from_numpy(arrays.eval_clip_features.astype(np.float32)),
        "static_features": torch.from_numpy(arrays.static_features.astype(np.float32)),
        "actions": torch.from_numpy(arrays.actions),
    }
