"""The synthetic camera-site world: planned, rendered to real mp4 / PNG files, with manifests.

No public video dataset can be downloaded here, so the project's demo and tests run on a world
that keeps the paper's premise testable: PRIVATE ATTRIBUTES ARE STATIC AND SPATIAL (visible in
any single frame), UTILITY IS TEMPORAL (what the body does over time). `simulations.render`
draws the frames; this module decides what every file shows, writes it, and reads it back.

    root = generate_world("runs/world", preset="default", seed=0)   # ~1-2 min on 2 cores
    world = load_world(root)
    train = world.manifest("ar", "site_03")                       # list of dicts

Layout (paths in manifests are relative to the world root):

    OUT/world.json                              identity, names, site mixes, manifest hashes
    OUT/site_NN/{ar,tad,ad}/manifest.jsonl      client camera sites (splits train / val)
    OUT/central/{ar,tad,ad,privacy,bias}/...    central evaluation world (train / val / test)
    OUT/pretrain/{ar,privacy}/...               only in a world made with purpose="pretrain"

Manifest lines (one JSON object per file): `video_id` (unique in the world), `path`, `split`,
`site` ("site_NN" | "central" | "pretrain"), `camera` (the camera that filmed it), `labels`
(per dataset, below), `attributes` (the 7 binary ATTRIBUTES), `num_frames`, `sha256` of the file.

    ar       {"action": int, "action_name": str}
    tad      {"segments": [{"start", "end", "action", "action_name"}]}      end exclusive
    ad       {"anomalous": bool, "anomalies": [{"start", "end", "anomaly"}], "segments": [...]}
    privacy  {"source_action": str}     the action the still was taken from (not a target)
    bias     {"action", "action_name", "subclass": "feminine" | "masculine"}

Determinism: every item renders from its own generator, seeded by a SeedSequence with entropy
(seed, purpose code) and a spawn key naming the group, dataset and index of the item, so a
world is the same in any order, with any number of worker processes. x264 runs single-threaded
with fixed settings, so the same seed gives byte-identical files and manifests (with the same
PyAV / libx264 build; another build may encode other bytes of the same frames).
`plan_world` decides everything without rendering; `item_frames` renders one planned item in
memory.

Reruns: a file is kept when its SHA-256 matches the one recorded for it (in a manifest, or in
`.journal.jsonl` while a run is under way), otherwise it is rendered again; temporary files of
an interrupted run are deleted. Manifests and world.json are written last.

Purposes: "evaluate" (client sites + central world) and "pretrain" (a disjoint world to
pre-train the encoder on). They differ in the SeedSequence entropy (purpose code 0 vs 1), so no
camera background, light, person or motion is shared between them, even with the same seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path, atomic_write_text, file_sha256
from common.errors import LatentveilError
from common.manifest import ManifestError, read_jsonl
from simulations import render

WORLD_VERSION = 1  # bump when the same seed would render different files or labels

ATTRIBUTES = (
    "skin_tone",  # 1 = dark skin on face, hands and any bare limb; 0 = light skin
    "gender_presentation",  # 1 = feminine (long hair, skirt); 0 = masculine (short hair, trousers)
    "face_complete",  # 1 = the whole face is visible
    "face_partial",  # 1 = a mask covers the lower half of the face (eyes visible)
    "semi_nudity",  # 1 = bare arms and legs (sleeveless top, shorts / short skirt)
    "personal_relationship",  # 1 = a second person stands touching the actor (hand on shoulder)
    "social_relationship",  # 1 = a group: three or more people in view
)
# face_complete and face_partial encode one face state: visible (1, 0), masked (0, 1), or
# hidden under a full helmet with an opaque visor (0, 0); (1, 1) never occurs.
FACE_STATES = ("visible", "partial", "hidden")

ACTIONS = (
    "walk_left",  # march-like steps while moving towards image-left
    "walk_right",  # the same steps towards image-right
    "march",  # the same steps on the spot
    "kick",  # the image-left leg swings out sideways and back, repeatedly
    "squat",  # feet planted, the body goes down and up
    "jump",  # crouch, take off with straight legs, land
    "wave",  # the image-left hand, raised, swings side to side
    "clap",  # both hands meet in front of the chest and part
)
ANOMALIES = ("fall", "fight", "run")  # only in `ad` videos, never among ACTIONS
DATASETS = ("ar", "tad", "ad", "privacy", "bias")
SPLITS = ("train", "val", "test")
PURPOSES = {"evaluate": 0, "pretrain": 1}
SUBCLASSES = ("masculine", "feminine")  # index = gender_presentation

# Global prevalence of each binary attribute, and of the face states
PREVALENCE = {
    "skin_tone": 0.3,
    "gender_presentation": 0.35,
    "semi_nudity": 0.3,
    "personal_relationship": 0.3,
    "social_relationship": 0.3,
}
FACE_MIX = (0.35, 0.3, 0.35)  # visible, partial, hidden
BIAS_MAJORITY = 0.95  # NTU-Bias-F: 95% of an action's clips show one presentation

_DATASET_CODES = {name: i for i, name in enumerate(DATASETS)}
_GROUP_SITE, _GROUP_CENTRAL, _GROUP_PRETRAIN, _GROUP_WORLD = 1, 2, 3, 0
_IDENTITY_FILE = ".world-identity.json"
_JOURNAL_FILE = ".journal.jsonl"


class WorldError(LatentveilError):
    """A world folder or request that cannot be used, with what to do about it."""


# ---------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """Sizes of a world. Tuples are (train, val) for client sites and pre-training,
    (train, val, test) for the central world; counts are videos (PNG frames for privacy).

    tiny     3 sites, 64 px, ~110 files: the whole world in a few seconds (tests).
    default  8 sites, 96 px, 7524 files (224k frames, ~150 MB): 101-108 s measured with 2
             workers on 2 cores that other jobs shared (190 s of CPU). The central AR test
             split has 2000 videos: the standard error of a top-1 near 85% is 0.8 points.
             purpose="pretrain": 2000 AR clips + 2000 stills in ~36 s.
    large    16 sites, more of everything (benchmarks), about 2.3x default.

    96 px: the main actor is 62-78% of the frame height (60-75 px), the head a quarter of
    that, so a mask or helmet covers hundreds of pixels and survives yuv420p chroma
    subsampling and an encoder's resize to 64 px; rendering and x264 cost grows with the
    pixel count, and 112 px would not fit the 2-minute budget of the default world.
    """

    name: str
    frame_size: int  # stored square side, pixels (even: yuv420p)
    fps: int
    clip_frames: int  # frames of an `ar` / `bias` video
    long_frames: int  # frames of a `tad` / `ad` video
    sites: int
    alpha: float  # Dirichlet concentration of the site mixes
    site_ar: tuple[int, int]
    site_tad: tuple[int, int]
    site_ad: tuple[int, int]
    central_cameras: int
    central_ar: tuple[int, int, int]
    central_tad: tuple[int, int, int]
    central_ad: tuple[int, int, int]
    central_privacy: tuple[int, int, int]
    central_bias: tuple[int, int, int]
    pretrain_cameras: int
    pretrain_ar: tuple[int, int]
    pretrain_privacy: tuple[int, int]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        frame_size=64,
        fps=25,
        clip_frames=32,
        long_frames=64,
        sites=3,
        alpha=0.3,
        site_ar=(6, 2),
        site_tad=(1, 1),
        site_ad=(2, 1),
        central_cameras=2,
        central_ar=(8, 4, 8),
        central_tad=(1, 1, 2),
        central_ad=(2, 1, 2),
        central_privacy=(8, 4, 8),
        central_bias=(8, 2, 8),
        pretrain_cameras=2,
        pretrain_ar=(8, 4),
        pretrain_privacy=(8, 4),
    ),
    "default": Preset(
        name="default",
        frame_size=96,
        fps=25,
        clip_frames=32,
        long_frames=160,
        sites=8,
        alpha=0.3,
        site_ar=(128, 32),
        site_tad=(10, 2),
        site_ad=(10, 2),
        central_cameras=4,
        central_ar=(800, 300, 2000),
        central_tad=(24, 8, 24),
        central_ad=(24, 8, 24),
        central_privacy=(1000, 400, 1000),
        central_bias=(200, 80, 160),
        pretrain_cameras=8,
        pretrain_ar=(1600, 400),
        pretrain_privacy=(1600, 400),
    ),
    "large": Preset(
        name="large",
        frame_size=96,
        fps=25,
        clip_frames=32,
        long_frames=160,
        sites=16,
        alpha=0.3,
        site_ar=(300, 60),
        site_tad=(20, 4),
        site_ad=(20, 4),
        central_cameras=6,
        central_ar=(2000, 600, 4000),
        central_tad=(60, 20, 60),
        central_ad=(60, 20, 60),
        central_privacy=(2000, 600, 2000),
        central_bias=(480, 160, 320),
        pretrain_cameras=12,
        pretrain_ar=(4000, 800),
        pretrain_privacy=(4000, 800),
    ),
}


def resolve_preset(preset: str | Preset, sites: int | None = None, alpha: float | None = None):
    """The preset by name (or as given) with `sites` and `alpha` overridden when not None."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise WorldError(f"unknown world preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if sites is not None:
        if sites < 1:
            raise WorldError(f"a world needs at least one site, got sites={sites}")
        preset = replace(preset, sites=int(sites))
    if alpha is not None:
        if not alpha > 0:
            raise WorldError(f"the Dirichlet concentration alpha must be > 0, got {alpha}")
        preset = replace(preset, alpha=float(alpha))
    return preset


# ---------------------------------------------------------------------------------------------
# Planning: every label, attribute, segment and seed, without rendering anything


@dataclass(frozen=True)
class WorldPlan:
    """Everything a world holds, before rendering. `items` are what workers render."""

    preset: Preset
    seed: int
    purpose: str
    sites: list[dict[str, Any]]  # client sites: id, camera, action_mix, prevalence, face_mix
    cameras: list[dict[str, Any]]  # cameras of the central (or pre-training) world
    bias_action: str | None
    items: list[dict[str, Any]]

    def items_of(self, dataset: str, group: str | None = None) -> list[dict[str, Any]]:
        """The planned items of one dataset, optionally of one group (site id / central)."""
        return [
            it
            for it in self.items
            if it["dataset"] == dataset and (group is None or it["site"] == group)
        ]


def _sequence(seed: int, purpose: str, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, PURPOSES[purpose]], spawn_key=tuple(key))


def _rng(seed: int, purpose: str, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(_sequence(seed, purpose, *key)))


def _camera(rng: np.random.Generator, camera_id: str) -> dict[str, Any]:
    """A camera: background seed, light (gain x tint per channel), sensor noise."""
    gain = rng.uniform(0.8, 1.15)
    tint = rng.uniform(0.92, 1.08, size=3)
    return {
        "id": camera_id,
        "seed": int(rng.integers(2**31)),
        "light": [round(float(gain * c), 4) for c in tint],
        "noise": round(float(rng.uniform(1.0, 4.0)), 3),
    }


def _concentration(alpha: float) -> float:
    """Beta / Dirichlet concentration of a site's attribute mix around the global prevalence."""
    return 20.0 * alpha


def _site(seed: int, purpose: str, index: int, alpha: float) -> dict[str, Any]:
    """A client site: its camera and its non-IID mixes of actions and attributes."""
    rng = _rng(seed, purpose, _GROUP_SITE, index, 0)
    camera = _camera(rng, f"site_{index:02d}")
    action_mix = rng.dirichlet(np.full(len(ACTIONS), alpha))
    conc = _concentration(alpha)
    prevalence = {
        name: float(np.clip(rng.beta(conc * p, conc * (1 - p)), 0.05, 0.95))
        for name, p in PREVALENCE.items()
    }
    face_mix = rng.dirichlet(conc * np.asarray(FACE_MIX))
    face_mix = np.clip(face_mix, 0.05, None)
    return {
        "id": f"site_{index:02d}",
        "camera": camera,
        "action_mix": [round(float(p), 6) for p in action_mix / action_mix.sum()],
        "prevalence": {k: round(v, 6) for k, v in prevalence.items()},
        "face_mix": [round(float(p), 6) for p in face_mix / face_mix.sum()],
    }


def _attributes(rng: np.random.Generator, prevalence: dict[str, float], face_mix) -> dict:
    face = int(rng.choice(3, p=np.asarray(face_mix) / np.sum(face_mix)))
    values = {name: int(rng.random() < p) for name, p in prevalence.items()}
    values["face_complete"] = int(face == 0)
    values["face_partial"] = int(face == 1)
    return {name: values[name] for name in ATTRIBUTES}


def _splits(sizes: Sequence[int]) -> list[str]:
    return [split for split, n in zip(SPLITS, sizes, strict=False) for _ in range(n)]


def _balanced_actions(rng: np.random.Generator, n: int) -> list[int]:
    actions = np.resize(np.arange(len(ACTIONS)), n)
    return [int(a) for a in rng.permutation(actions)]


def _plan_long(
    rng: np.random.Generator, frames: int, action_mix, anomaly: str | None
) -> dict[str, Any]:
    """Segments of an untrimmed video: idle gaps, ordinary actions, maybe one anomaly.

    Walks and runs move the actor along a track [0, 1] at the renderer's nominal speeds; the
    plan keeps the track position inside it (a walk turns round when there is no room).
    """
    min_gap, first_gap = 6, 4
    lengths: list[tuple[str, int]] = []
    anomaly_len = {"fall": (24, 40), "fight": (16, 32), "run": (10, 17)}
    if anomaly is not None:
        lo, hi = anomaly_len[anomaly]
        lengths.append((anomaly, int(rng.integers(lo, hi))))
    while True:
        action = ACTIONS[int(rng.choice(len(ACTIONS), p=action_mix))]
        length = int(rng.integers(20, 41))
        used = sum(n for _, n in lengths) + length + first_gap + min_gap * (len(lengths) + 1)
        if used > frames:
            break
        lengths.append((action, length))
    if anomaly is not None and len(lengths) > 1:  # the anomaly at a random place in the order
        order = rng.permutation(len(lengths))
        lengths = [lengths[i] for i in order]
    spare = frames - sum(n for _, n in lengths) - first_gap - min_gap * len(lengths)
    gaps = rng.multinomial(max(spare, 0), np.full(len(lengths) + 1, 1 / (len(lengths) + 1)))
    position = float(rng.uniform(0.25, 0.75))
    plan: dict[str, Any] = {"start_pos": round(position, 6), "segments": [], "anomalies": []}
    t = first_gap + int(gaps[0])
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
            entry = {"start": t, "end": t + length, "anomaly": name}
            if name == "run":
                entry["direction"] = step
            plan["anomalies"].append(entry)
        else:
            plan["segments"].append(
                {"start": t, "end": t + length, "action": ACTIONS.index(name), "action_name": name}
            )
        t += length + min_gap + int(gaps[i + 1])
    return plan


def _item(
    *,
    dataset: str,
    group: str,
    index: int,
    split: str,
    camera: dict[str, Any],
    attributes: dict[str, int],
    labels: dict[str, Any],
    num_frames: int,
    preset: Preset,
    seed_key: list[int],
    kind: str,
    **render_fields: Any,
) -> dict[str, Any]:
    video_id = f"{group}_{dataset}_{index:05d}"
    suffix = ".png" if kind == "still" else ".mp4"
    return {
        "video_id": video_id,
        "path": f"{group}/{dataset}/{video_id}{suffix}",
        "split": split,
        "site": group,
        "camera": camera["id"],
        "labels": labels,
        "attributes": attributes,
        "num_frames": num_frames,
        # what the renderer needs, not written to manifests:
        "dataset": dataset,
        "kind": kind,
        "seed": seed_key,
        "frame_size": preset.frame_size,
        "fps": preset.fps,
        "clip_frames": preset.clip_frames,
        "render_camera": camera,
        **render_fields,
    }


def _plan_group(
    *,
    preset: Preset,
    seed: int,
    purpose: str,
    group: str,
    group_key: tuple[int, ...],
    cameras: list[dict[str, Any]],
    sizes: dict[str, Sequence[int]],
    action_mix,
    prevalence: dict[str, float],
    face_mix,
    balanced: bool,
    bias_action: int | None = None,
) -> list[dict[str, Any]]:
    """Items of one group (a client site, the central or the pre-training world)."""
    items: list[dict[str, Any]] = []
    action_mix = np.asarray(action_mix, dtype=np.float64)
    action_mix = action_mix / action_mix.sum()
    for dataset, size in sizes.items():
        code = _DATASET_CODES[dataset]
        rng = _rng(seed, purpose, *group_key, 1, code)
        splits = _splits(size)
        n = len(splits)
        if balanced:
            actions = []
            for split in SPLITS:  # balanced within each split
                actions += _balanced_actions(rng, splits.count(split))
        else:
            actions = [int(rng.choice(len(ACTIONS), p=action_mix)) for _ in range(n)]
        camera_of = rng.integers(len(cameras), size=n)
        subclasses = (
            _bias_subclasses(rng, splits, actions, bias_action) if dataset == "bias" else None
        )
        anomalous = _anomalous_flags(rng, splits) if dataset == "ad" else None
        for i in range(n):
            attributes = _attributes(rng, prevalence, face_mix)
            camera = cameras[int(camera_of[i])]
            common = {
                "dataset": dataset,
                "group": group,
                "index": i,
                "split": splits[i],
                "camera": camera,
                "attributes": attributes,
                "preset": preset,
                "seed_key": [seed, PURPOSES[purpose], *group_key, 2, code, i],
            }
            name = ACTIONS[actions[i]]
            if dataset == "ar":
                labels = {"action": actions[i], "action_name": name}
                items.append(
                    _item(
                        **common,
                        labels=labels,
                        num_frames=preset.clip_frames,
                        kind="clip",
                        action=name,
                    )
                )
            elif dataset == "bias":
                attributes["gender_presentation"] = subclasses[i]
                labels = {
                    "action": actions[i],
                    "action_name": name,
                    "subclass": SUBCLASSES[subclasses[i]],
                }
                items.append(
                    _item(
                        **common,
                        labels=labels,
                        num_frames=preset.clip_frames,
                        kind="clip",
                        action=name,
                    )
                )
            elif dataset == "privacy":
                labels = {"source_action": name}
                items.append(
                    _item(**common, labels=labels, num_frames=1, kind="still", action=name)
                )
            elif dataset == "tad":
                script = _plan_long(rng, preset.long_frames, action_mix, None)
                labels = {"segments": script["segments"]}
                items.append(
                    _item(
                        **common,
                        labels=labels,
                        num_frames=preset.long_frames,
                        kind="long",
                        **script,
                    )
                )
            elif dataset == "ad":
                anomaly = ANOMALIES[int(rng.integers(len(ANOMALIES)))] if anomalous[i] else None
                script = _plan_long(rng, preset.long_frames, action_mix, anomaly)
                labels = {
                    "anomalous": bool(script["anomalies"]),
                    "anomalies": [
                        {k: a[k] for k in ("start", "end", "anomaly")} for a in script["anomalies"]
                    ],
                    "segments": script["segments"],
                }
                items.append(
                    _item(
                        **common,
                        labels=labels,
                        num_frames=preset.long_frames,
                        kind="long",
                        **script,
                    )
                )
    return items


def _bias_subclasses(rng, splits: list[str], actions: list[int], flipped: int | None) -> list[int]:
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


def _anomalous_flags(rng, splits: list[str]) -> list[bool]:
    """Half of each split's `ad` videos are anomalous (rounded up), in random order."""
    flags = [False] * len(splits)
    for split in SPLITS:
        idx = [i for i, s in enumerate(splits) if s == split]
        for i in rng.permutation(idx)[: (len(idx) + 1) // 2]:
            flags[int(i)] = True
    return flags


def plan_world(
    preset: str | Preset = "default",
    sites: int | None = None,
    seed: int = 0,
    alpha: float | None = None,
    purpose: str = "evaluate",
) -> WorldPlan:
    """Plan a world without rendering: sites, cameras, and every item's labels and seed."""
    if purpose not in PURPOSES:
        raise WorldError(f"unknown world purpose {purpose!r}; choose one of {sorted(PURPOSES)}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise WorldError(f"a world seed is a non-negative integer, got {seed!r}")
    seed = int(seed)
    preset = resolve_preset(preset, sites, alpha)
    uniform = np.full(len(ACTIONS), 1 / len(ACTIONS))
    if purpose == "pretrain":
        cameras = [
            _camera(_rng(seed, purpose, _GROUP_PRETRAIN, i, 0), f"pretrain_cam_{i}")
            for i in range(preset.pretrain_cameras)
        ]
        items = _plan_group(
            preset=preset,
            seed=seed,
            purpose=purpose,
            group="pretrain",
            group_key=(_GROUP_PRETRAIN, 0),
            cameras=cameras,
            sizes={"ar": preset.pretrain_ar, "privacy": preset.pretrain_privacy},
            action_mix=uniform,
            prevalence=PREVALENCE,
            face_mix=FACE_MIX,
            balanced=True,
        )
        return WorldPlan(preset, seed, purpose, [], cameras, None, items)

    site_list = [_site(seed, purpose, i, preset.alpha) for i in range(preset.sites)]
    items: list[dict[str, Any]] = []
    for i, site in enumerate(site_list):
        items += _plan_group(
            preset=preset,
            seed=seed,
            purpose=purpose,
            group=site["id"],
            group_key=(_GROUP_SITE, i),
            cameras=[site["camera"]],
            sizes={"ar": preset.site_ar, "tad": preset.site_tad, "ad": preset.site_ad},
            action_mix=site["action_mix"],
            prevalence=site["prevalence"],
            face_mix=site["face_mix"],
            balanced=False,
        )
    cameras = [
        _camera(_rng(seed, purpose, _GROUP_CENTRAL, i, 0), f"central_cam_{i}")
        for i in range(preset.central_cameras)
    ]
    bias_action = int(_rng(seed, purpose, _GROUP_WORLD).integers(len(ACTIONS)))
    items += _plan_group(
        preset=preset,
        seed=seed,
        purpose=purpose,
        group="central",
        group_key=(_GROUP_CENTRAL, 0),
        cameras=cameras,
        sizes={
            "ar": preset.central_ar,
            "tad": preset.central_tad,
            "ad": preset.central_ad,
            "privacy": preset.central_privacy,
            "bias": preset.central_bias,
        },
        action_mix=uniform,
        prevalence=PREVALENCE,
        face_mix=FACE_MIX,
        balanced=True,
        bias_action=bias_action,
    )
    return WorldPlan(preset, seed, purpose, site_list, cameras, ACTIONS[bias_action], items)


# ---------------------------------------------------------------------------------------------
# Writing files

MANIFEST_KEYS = (
    "video_id",
    "path",
    "split",
    "site",
    "camera",
    "labels",
    "attributes",
    "num_frames",
    "sha256",
)
X264_OPTIONS = {
    "crf": "18",
    "preset": "veryfast",
    # one thread and no scene-cut heuristics: the same frames give the same bytes
    "x264-params": "threads=1:bframes=0:keyint=32:min-keyint=32:scenecut=0",
}


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: int) -> int:
    """Encode (H, W, 3) uint8 RGB frames as H.264 / yuv420p mp4; returns the frame count."""
    import av

    count = 0
    with av.open(str(path), "w", format="mp4") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.thread_count = 1
                stream.options = dict(X264_OPTIONS)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = count
            container.mux(stream.encode(video_frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def item_frames(item: dict[str, Any]) -> np.ndarray:
    """Render a planned item in memory: (num_frames, S, S, 3) uint8, as written before encoding."""
    renderable = {**item, "camera": item["render_camera"]}
    if item["kind"] == "still":
        return render.render_still(renderable)[None]  # (1, S, S, 3)
    return np.stack(list(render.render_frames(renderable)))  # (T, S, S, 3)


def _render_to_file(item: dict[str, Any], target: Path) -> str:
    """Render one item to `target` atomically; returns the file's SHA-256."""
    renderable = {**item, "camera": item["render_camera"]}
    if item["kind"] == "still":
        from PIL import Image

        frame = render.render_still(renderable)
        with atomic_path(target, ".png", fsync=False) as tmp:
            Image.fromarray(frame).save(tmp, format="PNG", compress_level=6)
            sha = file_sha256(tmp)
        return sha
    with atomic_path(target, ".mp4", fsync=False) as tmp:
        count = write_mp4(render.render_frames(renderable), tmp, item["fps"])
        if count != item["num_frames"]:
            raise RuntimeError(
                f"{item['video_id']}: rendered {count} frames, planned {item['num_frames']}"
            )
        sha = file_sha256(tmp)
    return sha


def _write_text(path: Path, text: str) -> None:
    """Write atomically, readable by all; a file that already says `text` is left untouched."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text() == text:
            return
    atomic_write_text(path, text)
    os.chmod(path, 0o644)


def _work(job: tuple[dict[str, Any], str]) -> tuple[str, str]:
    item, root = job
    return item["video_id"], _render_to_file(item, Path(root) / item["path"])


def _identity(plan: WorldPlan) -> dict[str, Any]:
    return {
        "version": WORLD_VERSION,
        "purpose": plan.purpose,
        "preset": plan.preset.name,
        "seed": plan.seed,
        "sites": plan.preset.sites if plan.purpose == "evaluate" else 0,
        "alpha": plan.preset.alpha,
        "sizes": asdict(plan.preset),
    }


def _check_folder(root: Path, identity: dict[str, Any]) -> None:
    """Refuse a folder that holds (part of) another world."""
    for name in ("world.json", _IDENTITY_FILE):
        path = root / name
        if not path.exists():
            continue
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: an interrupted write of our own; it is rewritten
        differences = []
        for key, mine in identity.items():
            theirs = found.get(key)
            if key == "sizes" and isinstance(theirs, dict):
                differences += [
                    f"{k}={theirs.get(k)!r} (asked {v!r})"
                    for k, v in mine.items()
                    if theirs.get(k) != v and k not in ("name", "sites", "alpha")
                ]
            elif theirs != mine:
                differences.append(f"{key}={theirs!r} (asked {mine!r})")
        if differences:
            raise WorldError(
                f"{root} already holds another world ({', '.join(differences)}). Use another "
                "folder, or delete this one to generate the requested world there."
            )


def _known_hashes(root: Path, plan: WorldPlan) -> dict[str, str]:
    """SHA-256 recorded for each finished file: from manifests, then from the journal."""
    known: dict[str, str] = {}
    groups = {(it["site"], it["dataset"]) for it in plan.items}
    for group, dataset in groups:
        path = root / group / dataset / "manifest.jsonl"
        if path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, WorldError):
                for entry in read_manifest(path):
                    known[entry["video_id"]] = entry["sha256"]
    journal = root / _JOURNAL_FILE
    if journal.exists():
        for line in journal.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                known[record["video_id"]] = record["sha256"]
    return known


def _remove_leftover_temps(root: Path, plan: WorldPlan) -> None:
    """Delete temporary files an interrupted run left (they are never taken as done)."""
    for folder in {(root / it["path"]).parent for it in plan.items} | {root}:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _manifest_line(item: dict[str, Any], sha: str) -> str:
    entry = {key: item[key] for key in MANIFEST_KEYS if key != "sha256"}
    entry["sha256"] = sha
    return json.dumps(entry, separators=(",", ":"))


def _run_jobs(jobs: list[dict[str, Any]], root: Path, workers: int) -> Iterator[tuple[str, str]]:
    """Render jobs in this process (workers <= 1) or a spawn pool; yields (video_id, sha256)."""
    payload = [(item, str(root)) for item in jobs]
    if workers <= 1 or len(jobs) < 2:
        for job in payload:
            yield _work(job)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=workers) as pool:
        yield from pool.imap_unordered(_work, payload, chunksize=4)


def generate_world(
    out_dir: str | os.PathLike,
    preset: str | Preset = "default",
    sites: int | None = None,
    seed: int = 0,
    alpha: float | None = None,
    purpose: str = "evaluate",
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Generate (or complete) a world in `out_dir`; returns its root.

    Files already there whose SHA-256 matches what a previous run recorded are kept as they
    are; missing, truncated or altered files are rendered again. Every file is written to a
    temporary name beside its target and renamed when complete; manifests and `world.json`
    are written last, so a world with `world.json` is complete. A folder holding a world
    with another preset / seed / sites / alpha / purpose raises WorldError.
    """
    from tqdm import tqdm

    root = Path(out_dir)
    plan = plan_world(preset, sites, seed, alpha, purpose)
    identity = json.loads(json.dumps(_identity(plan)))  # as it reads back from JSON
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorldError(f"cannot create the world folder {root}: {error}") from None
    _check_folder(root, identity)
    _write_text(root / _IDENTITY_FILE, json.dumps(identity, indent=1) + "\n")
    _remove_leftover_temps(root, plan)

    # Keep what is already there and intact; render the rest
    known = _known_hashes(root, plan)
    hashes: dict[str, str] = {}
    jobs = []
    for item in plan.items:
        path = root / item["path"]
        sha = known.get(item["video_id"])
        if sha is not None and path.is_file() and file_sha256(path) == sha:
            hashes[item["video_id"]] = sha
        else:
            jobs.append(item)
    bar = tqdm(
        total=len(plan.items), initial=len(hashes), disable=not progress, unit="file", desc="world"
    )
    with open(root / _JOURNAL_FILE, "a") as journal:
        for video_id, sha in _run_jobs(jobs, root, workers):
            hashes[video_id] = sha
            journal.write(json.dumps({"video_id": video_id, "sha256": sha}) + "\n")
            journal.flush()
            bar.update(1)
    bar.close()

    # Manifests, then world.json last
    datasets: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for item in plan.items:
        groups.setdefault((item["site"], item["dataset"]), []).append(
            _manifest_line(item, hashes[item["video_id"]])
        )
    for (group, dataset), lines in groups.items():
        text = "\n".join(lines) + "\n"
        rel = f"{group}/{dataset}/manifest.jsonl"
        _write_text(root / rel, text)
        datasets[f"{group}/{dataset}"] = {
            "manifest": rel,
            "count": len(lines),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    info = {
        **identity,
        "frame_size": plan.preset.frame_size,
        "fps": plan.preset.fps,
        "clip_frames": plan.preset.clip_frames,
        "long_frames": plan.preset.long_frames,
        "attributes": list(ATTRIBUTES),
        "face_states": {"visible": [1, 0], "partial": [0, 1], "hidden": [0, 0]},
        "actions": list(ACTIONS),
        "anomalies": list(ANOMALIES),
        "bias_action": plan.bias_action,
        "bias_majority": BIAS_MAJORITY,
        "site_ids": [site["id"] for site in plan.sites],
        "site_mixes": plan.sites,
        "cameras": plan.cameras,
        "datasets": datasets,
    }
    _write_text(root / "world.json", json.dumps(info, indent=1) + "\n")
    (root / _JOURNAL_FILE).unlink(missing_ok=True)
    return root


# ---------------------------------------------------------------------------------------------
# Reading worlds


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
    info_path = root / "world.json"
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
