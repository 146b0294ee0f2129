"""What each dataset's files show and are labelled with: one label builder per dataset.

`LABEL_BUILDERS[dataset]` turns what was drawn for one item (`ItemDraw`) into what it shows and
its labels (`ItemContent`), in the label formats of the package docstring. Builders that need
randomness (the scripts of untrimmed videos) draw from the dataset's generator, so the order in
which `planning` calls them is part of the world's determinism.

The two draws that look at a whole split at once, the NTU-Bias-F subclasses of `bias` clips and
which `ad` videos are anomalous, are here too (`bias_subclasses`, `anomalous_flags`); planning
makes them once per dataset and hands each item its share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations import render
from simulations.world.presets import Preset
from simulations.world.schema import ACTIONS, ANOMALIES, SPLITS, SUBCLASSES

BIAS_MAJORITY = 0.95  # NTU-Bias-F: 95% of an action's clips show one presentation

# Frames of idle time before the first event and between events of an untrimmed video
_FIRST_GAP, _MIN_GAP = 4, 6
_ACTION_FRAMES = (20, 41)  # [lo, hi) frames of an ordinary action in an untrimmed video
_ANOMALY_FRAMES = {"fall": (24, 40), "fight": (16, 32), "run": (10, 17)}  # [lo, hi)


@dataclass(frozen=True)
class LongScript:
    """What happens in an untrimmed (`tad` / `ad`) video, frame by frame.

    `segments` are ordinary actions {"start", "end", "action", "action_name"}, `anomalies` are
    {"start", "end", "anomaly"} plus, for a run, its "direction" (-1 = image-left), which only
    the renderer reads; `end` is exclusive. `start_pos` is the actor's track position in [0, 1]
    at frame 0.
    """

    start_pos: float
    segments: list[dict[str, Any]]
    anomalies: list[dict[str, Any]]


@dataclass(frozen=True)
class ItemDraw:
    """What one item's labels are built from: its own draws and its dataset's."""

    rng: np.random.Generator  # the dataset's generator, at this item's turn
    preset: Preset
    action: int  # the action drawn for the item, an index into ACTIONS
    attributes: dict[str, int]  # drawn from the group's prevalence, in ATTRIBUTES order
    action_mix: np.ndarray  # (len(ACTIONS),) the group's action distribution
    subclass: int | None = None  # bias: 1 = feminine, 0 = masculine
    anomalous: bool = False  # ad: whether the video holds an anomaly


@dataclass(frozen=True)
class ItemContent:
    """What a label builder decides about an item: what it shows, and its labels."""

    kind: str  # "clip" (an mp4 of clip_frames) | "long" (an mp4 of long_frames) | "still" (PNG)
    labels: dict[str, Any]
    attributes: dict[str, int]
    num_frames: int
    action: str | None = None  # the action a clip or still shows
    script: LongScript | None = None  # what a long video shows


LabelBuilder = Callable[[ItemDraw], ItemContent]


def _ar_content(draw: ItemDraw) -> ItemContent:
    """A trimmed clip of one action."""
    name = ACTIONS[draw.action]
    labels = {"action": draw.action, "action_name": name}
    return ItemContent("clip", labels, draw.attributes, draw.preset.clip_frames, action=name)


def _bias_content(draw: ItemDraw) -> ItemContent:
    """A trimmed clip whose gender presentation is the planned subclass, not a free draw."""
    if draw.subclass is None:
        raise ValueError("a bias clip needs its subclass (see bias_subclasses)")
    name = ACTIONS[draw.action]
    attributes = {**draw.attributes, "gender_presentation": draw.subclass}
    labels = {"action": draw.action, "action_name": name, "subclass": SUBCLASSES[draw.subclass]}
    return ItemContent("clip", labels, attributes, draw.preset.clip_frames, action=name)


def _privacy_content(draw: ItemDraw) -> ItemContent:
    """A still image (one frame of a clip of an action); the action is not a target."""
    name = ACTIONS[draw.action]
    labels = {"source_action": name}
    return ItemContent("still", labels, draw.attributes, 1, action=name)


def _tad_content(draw: ItemDraw) -> ItemContent:
    """An untrimmed video of ordinary actions with idle gaps between them."""
    script = plan_long_script(draw.rng, draw.preset.long_frames, draw.action_mix, None)
    labels = {"segments": script.segments}
    return ItemContent("long", labels, draw.attributes, draw.preset.long_frames, script=script)


def _ad_content(draw: ItemDraw) -> ItemContent:
    """An untrimmed video that, if anomalous, holds one anomaly among its ordinary actions."""
    anomaly = ANOMALIES[int(draw.rng.integers(len(ANOMALIES)))] if draw.anomalous else None
    script = plan_long_script(draw.rng, draw.preset.long_frames, draw.action_mix, anomaly)
    labels = {
        "anomalous": bool(script.anomalies),
        "anomalies": [{k: a[k] for k in ("start", "end", "anomaly")} for a in script.anomalies],
        "segments": script.segments,
    }
    return ItemContent("long", labels, draw.attributes, draw.preset.long_frames, script=script)


LABEL_BUILDERS: dict[str, LabelBuilder] = {
    "ar": _ar_content,
    "tad": _tad_content,
    "ad": _ad_content,
    "privacy": _privacy_content,
    "bias": _bias_content,
}


# ---------------------------------------------------------------------------------------------
# Scripts of untrimmed videos


def _event_lengths(
    rng: np.random.Generator, frames: int, action_mix: np.ndarray, anomaly: str | None
) -> list[tuple[str, int]]:
    """(name, frames) of the events of an untrimmed video, in order: as many ordinary actions
    as fit with the idle gaps, and the anomaly (if any) at a random place among them."""
    lengths: list[tuple[str, int]] = []
    if anomaly is not None:
        lo, hi = _ANOMALY_FRAMES[anomaly]
        lengths.append((anomaly, int(rng.integers(lo, hi))))
    while True:
        action = ACTIONS[int(rng.choice(len(ACTIONS), p=action_mix))]
        length = int(rng.integers(*_ACTION_FRAMES))
        used = sum(n for _, n in lengths) + length + _FIRST_GAP + _MIN_GAP * (len(lengths) + 1)
        if used > frames:
            break
        lengths.append((action, length))
    if anomaly is not None and len(lengths) > 1:
        order = rng.permutation(len(lengths))
        lengths = [lengths[i] for i in order]
    return lengths


def plan_long_script(
    rng: np.random.Generator, frames: int, action_mix: np.ndarray, anomaly: str | None
) -> LongScript:
    """Segments of an untrimmed video: idle gaps, ordinary actions, maybe one anomaly.

    Walks and runs move the actor along a track [0, 1] at the renderer's nominal speeds; the
    plan keeps the track position inside it (a walk turns round when there is no room).
    """
    lengths = _event_lengths(rng, frames, action_mix, anomaly)
    spare = frames - sum(n for _, n in lengths) - _FIRST_GAP - _MIN_GAP * len(lengths)
    gaps = rng.multinomial(max(spare, 0), np.full(len(lengths) + 1, 1 / (len(lengths) + 1)))
    position = float(rng.uniform(0.25, 0.75))
    script = LongScript(start_pos=round(position, 6), segments=[], anomalies=[])
    t = _FIRST_GAP + int(gaps[0])
    for i, (name, length) in enumerate(lengths):
        if name in ("walk_left", "walk_right"):
            travel = length * render.WALK_SPEED
            step = -1 if name == "walk_left" else 1
            room = position if step < 0 else 1 - position
            if room < travel:  # turn round, or shorten when neither way has room
                step, room = -step, 1 - room
                length = min(length, int(room / render.WALK_SPEED))
                name = "walk_left" if step < 0 else "walk_right"
            position += step * length * render.WALK_SPEED
        if name == "run":
            step = -1 if position > 0.5 else 1
            room = position if step < 0 else 1 - position
            length = min(length, int(room / render.RUN_SPEED))
            position += step * length * render.RUN_SPEED
        position = min(1.0, max(0.0, position))
        if name in ANOMALIES:
            entry: dict[str, Any] = {"start": t, "end": t + length, "anomaly": name}
            if name == "run":
                entry["direction"] = step
            script.anomalies.append(entry)
        else:
            script.segments.append(
                {"start": t, "end": t + length, "action": ACTIONS.index(name), "action_name": name}
            )
        t += length + _MIN_GAP + int(gaps[i + 1])
    return script


# ---------------------------------------------------------------------------------------------
# Draws over a whole dataset


def bias_subclasses(
    rng: np.random.Generator, splits: list[str], actions: list[int], flipped: int | None
) -> list[int]:
    """Perceived-gender subclass per clip (1 = feminine), NTU-Bias-F style.

    train / val: for every action 95% feminine and 5% masculine (at least one), except the
    flipped action, where it is the other way round. test: half and half per action, so the
    accuracy gap between subclasses can be measured.
    """
    out = [0] * len(splits)
    for split in SPLITS:
        for action in range(len(ACTIONS)):
            idx = [
                i
                for i, (s, a) in enumerate(zip(splits, actions, strict=True))
                if s == split and a == action
            ]
            if not idx:
                continue
            if split == "test":
                minority = len(idx) // 2
            else:
                minority = max(1, round((1 - BIAS_MAJORITY) * len(idx))) if len(idx) > 1 else 0
            majority = 0 if action == flipped and split != "test" else 1
            chosen = set(rng.choice(idx, size=minority, replace=False).tolist())
            for i in idx:
                out[i] = 1 - majority if i in chosen else majority
    return out


def anomalous_flags(rng: np.random.Generator, splits: list[str]) -> list[bool]:
    """Half of each split's `ad` videos are anomalous (rounded up), in random order."""
    flags = [False] * len(splits)
    for split in SPLITS:
        idx = [i for i, s in enumerate(splits) if s == split]
        for i in rng.permutation(idx)[: (len(idx) + 1) // 2]:
            flags[int(i)] = True
    return flags
