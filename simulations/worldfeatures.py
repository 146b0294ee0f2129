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
    EvaluationSet,
    Split,
    TaskVideos,
    VideoSplit,
    measure_privacy_and_utility,
)
from common.features import FeatureStore, VideoItem, extract_features
from common.layout import RunLayout
from common.tasks import TASKS, get_task
from simulations.world import (
    ACTIONS,
    ANOMALIES,
    ATTRIBUTES,
    SUBCLASSES,
    World,
    WorldError,
    generate_world,
    load_world,
)


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


def central_evaluation_datasets(world: World, tasks: Sequence[str] | None = None) -> list[str]:
    """The central datasets the evaluation reads: the privacy stills and the videos of every
    task (all registered tasks if None) that the central world has."""
    tasks = TASKS.names() if tasks is None else tasks
    have = set(world.datasets())
    videos = [f"central/{get_task(t).dataset}" for t in tasks] + ["central/bias"]
    return ["central/privacy", *dict.fromkeys(d for d in videos if d in have)]


def build_evaluation_set(
    world: World, store_path: str | Path, tasks: Sequence[str] | None = None
) -> EvaluationSet:
    """Join the central manifests with their features in `store_path`: stills with their
    attributes, and per task (all registered tasks the central world has if None) its videos'
    clip sequences, labels and actors' attributes."""
    tasks = TASKS.names() if tasks is None else tasks
    have = set(world.datasets())
    stills: dict[str, Split] = {}
    videos: dict[str, dict[str, VideoSplit]] = {}

    def attributes(entries: list[dict]) -> np.ndarray | None:
        if not all("attributes" in e for e in entries):
            return None
        return np.array([[e["attributes"][a] for a in ATTRIBUTES] for e in entries], np.float32)

    with FeatureStore(store_path) as store:
        for split in ("train", "val", "test"):
            entries = world.manifest("privacy", "central", split)
            features = np.stack([store.static_features(e["video_id"])[0] for e in entries])
            stills[split] = Split(features, attributes(entries))  # (N, d), (N, A)
            for name in tasks:
                task = get_task(name)
                if f"central/{task.dataset}" not in have:
                    continue
                entries = world.manifest(task.dataset, "central", split)
                clips = [store.clip_features(e["video_id"]) for e in entries]
                shortest = min(len(c) for c in clips)  # trimmed videos: the first C clips of each
                videos.setdefault(name, {})[split] = VideoSplit(
                    clips=np.stack([c[:shortest] for c in clips]),  # (N, C, d)
                    labels=_evaluation_labels(name, entries),
                    attributes=attributes(entries),
                )
        bias = _bias_videos(world, store) if "central/bias" in have else None
        encoder_id = store.settings.encoder_id
    task_videos = {name: TaskVideos(_classes(name), splits) for name, splits in videos.items()}
    groups = tuple(SUBCLASSES) if bias is not None else ()
    return EvaluationSet(encoder_id, tuple(ATTRIBUTES), stills, task_videos, bias, groups)


def _bias_videos(world: World, store: FeatureStore) -> TaskVideos:
    """The bias set: action videos with their actor's group (index into SUBCLASSES)."""
    splits = {}
    for split in ("train", "val", "test"):
        entries = world.manifest("bias", "central", split)
        clips = [store.clip_features(e["video_id"]) for e in entries]
        shortest = min(len(c) for c in clips)
        splits[split] = VideoSplit(
            clips=np.stack([c[:shortest] for c in clips]),
            labels={
                "action": np.array([e["labels"]["action"] for e in entries], np.int64),
                "group": np.array(
                    [SUBCLASSES.index(e["labels"]["subclass"]) for e in entries], np.int64
                ),
            },
        )
    return TaskVideos(tuple(ACTIONS), splits)


def _classes(task: str) -> tuple[str, ...]:
    """A task's class names in the synthetic world (AD: its anomaly kinds)."""
    dataset = get_task(task).dataset
    if dataset in ("ar", "tad"):
        return tuple(ACTIONS)
    if dataset == "ad":
        return tuple(ANOMALIES)
    return ()


def _evaluation_labels(name: str, entries: list[dict]) -> dict[str, np.ndarray]:
    """The task's labels of the central videos `entries`, stacked; AD videos also get `kind`,
    the index of their (first) anomaly in ANOMALIES, -1 when normal, so that the report can
    tell which kinds of anomaly an adapter keeps (common.tasks.anomaly_detection)."""
    task = get_task(name)
    labels = [task.labels(e) for e in entries]
    stacked = {k: np.array([lab[k] for lab in labels]) for k in labels[0]}
    if task.dataset == "ad":
        stacked["kind"] = np.array(
            [
                ANOMALIES.index(e["labels"]["anomalies"][0]["anomaly"])
                if e["labels"]["anomalous"]
                else -1
                for e in entries
            ],
            np.int64,
        )
    return stacked


def prepare_evaluation_set(
    world_dir: str | Path,
    out_dir: str | Path,
    encoder_config: EncoderConfig,
    features_config: FeaturesConfig,
    progress: bool = True,
) -> Path:
    """Extract the central world's features (resumable) and write the evaluation set, both in
    the run folder `out_dir` (common.layout)."""
    world = load_world(world_dir)
    layout = RunLayout(Path(out_dir))
    encoder = create_encoder(encoder_config)
    # The evaluation reads the central videos as clip sequences only (the stills are images,
    # which keep their one static clip), so their static clips are not encoded: a third of the
    # clips of the default world. A store made with them (by an older latentveil) resumes as is.
    extract_features(
        world_items(world, central_evaluation_datasets(world)),
        encoder,
        layout.central_store,
        features_config,
        progress,
        static_clips=0,
    )
    build_evaluation_set(world, layout.central_store).save(layout.evaluation_set)
    return layout.evaluation_set


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
    result = measure_privacy_and_utility(evaluation_set, None, config).to_json()
    result["privacy_cmap_over_chance"] = result["privacy_cmap"] / result["privacy_chance_cmap"]
    result["encoder_id"] = evaluation_set.encoder_id
    result["seconds"] = round(time.time() - started, 1)
    result["splits"] = {
        "stills": {split: len(data.labels) for split, data in evaluation_set.stills.items()},
        **{
            task: {split: len(data) for split, data in videos.splits.items()}
            for task, videos in evaluation_set.tasks.items()
        },
    }
    atomic_write_text(RunLayout(Path(out_dir)).leakage, json.dumps(result, indent=2) + "\n")
    return result
