"""A camera site's own data: its manifests, its cached features, and per-task training arrays.

A site folder holds one folder per dataset with a `manifest.jsonl` (one JSON object per file:
`video_id`, `path`, `split`, `labels`, ...). In the synthetic world `path` is relative to the
world root, the site folder's parent; a site's own folder works too. On first use the site
encodes its videos once with the frozen encoder into its HDF5 store (common.features); later
rounds read the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import EncoderConfig, FeaturesConfig, LossConfig
from common.encoders import create_encoder
from common.errors import LatentveilError
from common.features import FeatureStore, VideoItem, extract_features
from common.manifest import ManifestError, read_jsonl
from common.tasks import get_task


class SiteDataError(LatentveilError):
    """A site folder without the data it should hold."""


def read_site_manifest(site_dir: str | Path, dataset: str = "ar") -> list[dict]:
    """Entries of `<site_dir>/<dataset>/manifest.jsonl`, each with an absolute `file` path."""
    site_dir = Path(site_dir)
    path = site_dir / dataset / "manifest.jsonl"
    if not path.is_file():
        raise SiteDataError(f"site {site_dir} has no {dataset} manifest ({path} is missing)")
    try:
        entries = read_jsonl(path)
    except ManifestError as error:
        raise SiteDataError(str(error)) from None
    for number, entry in enumerate(entries, 1):
        if "path" not in entry:
            raise SiteDataError(f"{path}: entry {number} has no 'path'")
        for root in (site_dir.parent, site_dir, path.parent):
            if (root / entry["path"]).is_file():
                entry["file"] = root / entry["path"]
                break
        else:
            raise SiteDataError(f"{path}: file {entry['path']} not found under {site_dir}")
    return entries


@dataclass(frozen=True)
class TaskArrays:
    """Cached features of one split of a site's videos of one task, ready for training.

    clip_features (N, C, d): each video's non-overlapping clips; static_features (N, K, d)
    (K = 0 in a store made without static clips, `site_static_clips`); labels: the task's
    labels (common.tasks), name -> (N, ...) array.
    """

    video_ids: list[str]
    clip_features: np.ndarray
    static_features: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.video_ids)


@dataclass(frozen=True)
class TaskTensors:
    """TaskArrays as float32 / int64 tensors."""

    clip_features: torch.Tensor
    static_features: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.clip_features)


# What a site trains on: per task name, its videos of one split.
SiteData = dict[str, TaskTensors]


def site_datasets(site_dir: str | Path, tasks: Iterable[str]) -> dict[str, str]:
    """Task name -> dataset folder, for the given tasks whose dataset the site has."""
    site_dir = Path(site_dir)
    found = {}
    for name in tasks:
        dataset = get_task(name).dataset
        if (site_dir / dataset / "manifest.jsonl").is_file():
            found[name] = dataset
    return found


def site_static_clips(features: FeaturesConfig, loss: LossConfig) -> int:
    """Static clips per video a site's store needs: `features.static_clips` when the privacy
    budget takes static views (`loss.budget_views` static or both), none otherwise (nothing
    else at a site reads them; they were 40% of a default site's encoding)."""
    return features.static_clips if loss.budget_views in ("static", "both") else 0


def ensure_site_features(
    site_dir: str | Path,
    store_path: str | Path,
    encoder_config: EncoderConfig,
    features_config: FeaturesConfig,
    progress: bool = False,
    tasks: Iterable[str] = ("ar",),
    encoder_factory: Callable[[], torch.nn.Module] | None = None,
    static_clips: int | None = None,
) -> Path:
    """Encode the site's videos of the given tasks into its store unless they are all there.

    `encoder_factory` builds the encoder only when something is to be encoded (a site's edge
    encoder, `edge_export.site`); by default the eager encoder of `encoder_config`.
    `static_clips`: static clips per video the store must hold (`features.static_clips` if
    None; `site_static_clips`). A store that holds more is used as it is (and appended to with
    its own count); one that holds fewer is refused."""
    datasets = sorted(set(site_datasets(site_dir, tasks).values()))
    if not datasets:
        raise SiteDataError(
            f"site {site_dir} has data for none of the tasks {', '.join(tasks)} (no "
            f"<task dataset>/manifest.jsonl)"
        )
    entries = [e for dataset in datasets for e in read_site_manifest(site_dir, dataset)]
    store_path = Path(store_path)
    needed = features_config.static_clips if static_clips is None else static_clips
    if store_path.is_file():
        with FeatureStore(store_path) as store:
            stored = store.settings.static_clips
            complete = all(entry["video_id"] in store for entry in entries)
        if stored < needed:
            raise SiteDataError(
                f"{store_path} holds {stored} static clip(s) per video and this run needs "
                f"{needed} (loss.budget_views takes static views): delete the store so that "
                "the site encodes its videos again, or use another store"
            )
        if complete:
            return store_path
    encoder = encoder_factory() if encoder_factory else create_encoder(encoder_config)
    items = [VideoItem(entry["video_id"], entry["file"]) for entry in entries]
    extract_features(
        items, encoder, store_path, features_config, progress=progress, static_clips=needed
    )
    return store_path


def load_task_arrays(
    site_dir: str | Path, store_path: str | Path, task: str, split: str
) -> TaskArrays | None:
    """One task's videos of one split joined with their cached features (None: no videos)."""
    spec = get_task(task)
    entries = [e for e in read_site_manifest(site_dir, spec.dataset) if e["split"] == split]
    if not entries:
        return None
    with FeatureStore(store_path) as store:
        clips = [store.clip_features(e["video_id"]) for e in entries]
        statics = np.stack([store.static_features(e["video_id"]) for e in entries])
    shortest = min(len(c) for c in clips)
    # Trimmed clips of unequal length: keep the first C clips of each (C = the shortest).
    labels = [spec.labels(e) for e in entries]
    return TaskArrays(
        video_ids=[e["video_id"] for e in entries],
        clip_features=np.stack([c[:shortest] for c in clips]),  # (N, C, d)
        static_features=statics,  # (N, K, d)
        labels={key: np.array([lab[key] for lab in labels]) for key in labels[0]},
    )


def load_site_data(
    site_dir: str | Path, store_path: str | Path, tasks: Iterable[str], split: str
) -> dict[str, TaskArrays]:
    """Per task, the site's videos of `split`; tasks the site has no data for are left out
    (their loss terms are skipped). A site with data for none of them is an error."""
    tasks = list(tasks)
    data = {}
    for task in site_datasets(site_dir, tasks):
        arrays = load_task_arrays(site_dir, store_path, task, split)
        if arrays is not None:
            data[task] = arrays
    if not data:
        raise SiteDataError(
            f"site {site_dir} has no videos of the tasks {', '.join(tasks)} in split '{split}'"
        )
    return data


def pool_task_arrays(parts: list[TaskArrays]) -> TaskArrays:
    """Concatenate several sites' arrays of one task (the centralized baseline trains on the
    pool)."""
    shortest = min(p.clip_features.shape[1] for p in parts)
    return TaskArrays(
        video_ids=[v for p in parts for v in p.video_ids],
        clip_features=np.concatenate([p.clip_features[:, :shortest] for p in parts]),
        static_features=np.concatenate([p.static_features for p in parts]),
        labels={k: np.concatenate([p.labels[k] for p in parts]) for k in parts[0].labels},
    )


def pool_site_data(sites: list[dict[str, TaskArrays]]) -> dict[str, TaskArrays]:
    """Per task, every site's arrays of that task pooled (task order: first seen)."""
    tasks = list(dict.fromkeys(task for site in sites for task in site))
    return {task: pool_task_arrays([s[task] for s in sites if task in s]) for task in tasks}


def as_tensors(arrays: TaskArrays) -> TaskTensors:
    """float32 features and int64 / float32 labels as tensors."""

    def label(array: np.ndarray) -> torch.Tensor:
        if np.issubdtype(array.dtype, np.integer):
            return torch.from_numpy(array.astype(np.int64))
        return torch.from_numpy(array.astype(np.float32))

    return TaskTensors(
        clip_features=torch.from_numpy(arrays.clip_features.astype(np.float32)),
        static_features=torch.from_numpy(arrays.static_features.astype(np.float32)),
        labels={key: label(value) for key, value in arrays.labels.items()},
    )


def site_tensors(data: dict[str, TaskArrays]) -> SiteData:
    return {task: as_tensors(arrays) for task, arrays in data.items()}
