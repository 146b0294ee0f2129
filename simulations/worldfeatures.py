"""Glue between a generated world and feature stores: which files to encode, under which ids,
and labelled feature arrays for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from common.features import VideoItem
from simulations.world import World, WorldError


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
