"""Planning a world: every site, camera, label, attribute, segment and seed, without rendering.

`plan_world` is a pure function of (preset, sites, seed, alpha, purpose); every item gets a
seed of its own (see the package docstring), so it renders the same anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations import render
from simulations.world.presets import Preset, resolve_preset
from simulations.world.schema import (
    ACTIONS,
    ANOMALIES,
    ATTRIBUTES,
    DATASETS,
    PURPOSES,
    SPLITS,
    SUBCLASSES,
    WorldError,
)

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
