"""Glue between a generated world and feature stores: which files to encode, under which ids,
and labelled feature arrays for training and evaluation."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.atomic import atomic_write_text
from common.config import EncoderConfig, FeaturesConfig, RunConfig
from common.encoders import create_encoder
from common.evaluation import (
    EVALUATION_SET_FILE,
    EvaluationSet,
    Split,
    VideoSplit,
    measure_privacy_and_utility,
)
from common.features import FeatureStore, VideoItem, extract_features
from simulations.world import ACTIONS, ATTRIBUTES, World, WorldError, generate_world, load_world


def world_items(world: World, datasets: Sequence[str] | None = None) -> list[VideoItem]:
    """The files of the given "group/dataset" keys (all of the world's if None), as VideoItems
    under their manifest ids, in manifest order."""
    keys = world.datasets() if datasets is None else [key.strip() for key in datasets]
    items = []
    for key in keys:
        if key.count("/") != 1:
            raise WorldError(
                f"dataset {key!r} is not of the form group/dataset, e.g. central/privacy"
            )
        group, dataset = key.split("/")
        items += [
            VideoItem(entry["video_id"], world.path(entry))
            for entry in world.manifest(dataset, group)
        ]
    return items


def central_evaluation_datasets() -> list[str]:
    """The central datasets the privacy and AR evaluation read."""
    return ["central/privacy", "central/ar"]


def build_evaluation_set(world: World, store_path: str | Path) -> EvaluationSet:
    """Join the central privacy and AR manifests with their features in `store_path`: stills
    with their attributes, and action videos (their clip sequences) with their action and their
    actors' attributes."""
    stills: dict[str, Split] = {}
    videos: dict[str, VideoSplit] = {}

    def attributes(entries: list[dict]) -> np.ndarray:
        return np.array([[e["attributes"][a] for a in ATTRIBUTES] for e in entries], np.float32)

    with FeatureStore(store_path) as store:
        for split in ("train", "val", "test"):
            entries = world.manifest("privacy", "central", split)
            features = np.stack([store.static_features(e["video_id"])[0] for e in entries])
            stills[split] = Split(features, attributes(entries))  # (N, d), (N, A)
            entries = world.manifest("ar", "central", split)
            clips = [store.clip_features(e["video_id"]) for e in entries]
            shortest = min(len(c) for c in clips)  # trimmed videos: the first C clips of each
            videos[split] = VideoSplit(
                clips=np.stack([c[:shortest] for c in clips]),  # (N, C, d)
                actions=np.array([e["labels"]["action"] for e in entries], np.int64),
                attributes=attributes(entries),
            )
        encoder_id = store.settings.encoder_id
    return EvaluationSet(encoder_id, tuple(ATTRIBUTES), tuple(ACTIONS), stills, videos)


def prepare_evaluation_set(
    world_dir: str | Path,
    out_dir: str | Path,
    encoder_config: EncoderConfig,
    features_config: FeaturesConfig,
    progress: bool = True,
) -> Path:
    """Extract the central world's features (resumable) and write `evaluation_set.npz`."""
    world = load_world(world_dir)
    out_dir = Path(out_dir)
    encoder = create_encoder(encoder_config)
    store_path = out_dir / "central.h5"
    extract_features(
        world_items(world, central_evaluation_datasets()),
        encoder,
        store_path,
        features_config,
        progress,
    )
    set_path = out_dir / EVALUATION_SET_FILE
    build_evaluation_set(world, store_path).save(set_path)
    return set_path


def measure_raw_leakage(
    config: RunConfig, world_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> dict:
    """The testbed check: attacker cMAP and AR probe top-1 on RAW central features.

    Generates the world if missing, extracts the central features, runs both protocols (model
    selection on val, numbers on test) and writes `leakage.json` in `out_dir`.
    """
    started = time.time()
    generate_world(
        world_dir,
        preset=config.world.preset,
        sites=config.world.sites,
        seed=config.world.seed,
        alpha=config.world.dirichlet_alpha,
        progress=progress,
    )
    set_path = prepare_evaluation_set(world_dir, out_dir, config.encoder, config.features, progress)
    evaluation_set = EvaluationSet.load(set_path)
    result = measure_privacy_and_utility(
        evaluation_set, None, config.evaluation, config.anonymizer.window
    )
    result["privacy_cmap_over_chance"] = result["privacy_cmap"] / result["privacy_chance_cmap"]
    result["encoder_id"] = evaluation_set.encoder_id
    result["seconds"] = round(time.time() - started, 1)
    result["splits"] = {
        "stills": {split: len(data.labels) for split, data in evaluation_set.stills.items()},
        "videos": {split: len(data.actions) for split, data in evaluation_set.videos.items()},
    }
    atomic_write_text(Path(out_dir) / "leakage.json", json.dumps(result, indent=2) + "\n")
    return result
