"""Planning a world: every site, camera, label, attribute, segment and seed, without rendering.

`plan_world` is a pure function of (preset, sites, seed, alpha, purpose). Its items are
`PlannedItem`s: what a file's manifest entry says and what the renderer needs to draw it. Every
item gets a seed of its own (see the package docstring), so it renders the same anywhere; what
each dataset's items show and are labelled with is decided in `simulations.world.labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulations.world.labels import (
    LABEL_BUILDERS,
    ItemContent,
    ItemDraw,
    LongScript,
    anomalous_flags,
    bias_subclasses,
)
from simulations.world.presets import Preset, resolve_preset
from simulations.world.schema import (
    ACTIONS,
    ATTRIBUTES,
    DATASETS,
    FACE_ENCODING,
    FACE_STATES,
    PURPOSES,
    SPLITS,
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
FACE_MIX = (0.35, 0.3, 0.35)  # of the FACE_STATES: visible, partial, hidden

_DATASET_CODES = {name: i for i, name in enumerate(DATASETS)}
_GROUP_SITE, _GROUP_CENTRAL, _GROUP_PRETRAIN, _GROUP_WORLD = 1, 2, 3, 0


@dataclass(frozen=True)
class PlannedItem:
    """One file of a world as planned: its manifest entry (but the hash) and what the renderer
    needs to draw it (`simulations.render.render_frames` / `render_still`)."""

    video_id: str  # "<site>_<dataset>_<index:05d>", unique in the world
    path: str  # relative to the world root: "<site>/<dataset>/<video_id>.mp4" (.png for stills)
    split: str  # "train" | "val" | "test"
    site: str  # its group: "site_NN" | "central" | "pretrain"
    dataset: str  # one of DATASETS
    kind: str  # "clip" | "long" | "still" (see labels.ItemContent)
    camera: dict[str, Any]  # the camera that films it: id, seed, light, noise
    labels: dict[str, Any]  # in the format of its dataset (package docstring)
    attributes: dict[str, int]  # the 7 binary ATTRIBUTES, in that order
    num_frames: int
    seed: list[int]  # entropy and spawn key of its generator (render.item_rng)
    frame_size: int
    fps: int
    clip_frames: int  # a still is a frame of a clip this long
    action: str | None = None  # what a clip or still shows
    script: LongScript | None = None  # what a long video shows

    def manifest_entry(self, sha256: str) -> dict[str, Any]:
        """Its line of manifest.jsonl, keys in MANIFEST_KEYS order; `sha256` of the file."""
        return {
            "video_id": self.video_id,
            "path": self.path,
            "split": self.split,
            "site": self.site,
            "camera": self.camera["id"],
            "labels": self.labels,
            "attributes": self.attributes,
            "num_frames": self.num_frames,
            "sha256": sha256,
        }


@dataclass(frozen=True)
class WorldPlan:
    """Everything a world holds, before rendering. `items` are what workers render."""

    preset: Preset
    seed: int
    purpose: str
    sites: list[dict[str, Any]]  # client sites: id, camera, action_mix, prevalence, face_mix
    cameras: list[dict[str, Any]]  # cameras of the central (or pre-training) world
    bias_action: str | None
    items: list[PlannedItem]

    def items_of(self, dataset: str, group: str | None = None) -> list[PlannedItem]:
        """The planned items of one dataset, optionally of one group (site id / central)."""
        return [
            it for it in self.items if it.dataset == dataset and (group is None or it.site == group)
        ]


@dataclass(frozen=True)
class _Group:
    """A client site, the central or the pre-training world: what its items are drawn from."""

    name: str  # "site_NN" | "central" | "pretrain"
    key: tuple[int, ...]  # its part of the spawn key of every generator it uses
    cameras: list[dict[str, Any]]
    sizes: dict[str, Sequence[int]]  # files per dataset: (train, val) or (train, val, test)
    action_mix: Sequence[float]  # (len(ACTIONS),) how often each action is drawn
    prevalence: dict[str, float]  # of each binary attribute but the face
    face_mix: Sequence[float]  # visible, partial, hidden
    balanced: bool  # actions balanced within each split instead of drawn from action_mix
    bias_action: int | None = None  # the flipped action of the bias dataset


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


def _attributes(
    rng: np.random.Generator, prevalence: dict[str, float], face_mix: Sequence[float]
) -> dict[str, int]:
    """One person's binary attributes, in ATTRIBUTES order: a face state, then the others."""
    face = int(rng.choice(3, p=np.asarray(face_mix) / np.sum(face_mix)))
    values = {name: int(rng.random() < p) for name, p in prevalence.items()}
    values["face_complete"], values["face_partial"] = FACE_ENCODING[FACE_STATES[face]]
    return {name: values[name] for name in ATTRIBUTES}


def _splits(sizes: Sequence[int]) -> list[str]:
    """The split of every item of a dataset: (3, 1) -> train, train, train, val."""
    return [split for split, n in zip(SPLITS, sizes, strict=False) for _ in range(n)]


def _balanced_actions(rng: np.random.Generator, n: int) -> list[int]:
    """n actions, every action as often as n allows, in random order."""
    actions = np.resize(np.arange(len(ACTIONS)), n)
    return [int(a) for a in rng.permutation(actions)]


def _planned_item(
    group: _Group,
    dataset: str,
    index: int,
    split: str,
    camera: dict[str, Any],
    content: ItemContent,
    preset: Preset,
    seed_key: list[int],
) -> PlannedItem:
    """The item `index` of a dataset of a group, with what its label builder decided."""
    video_id = f"{group.name}_{dataset}_{index:05d}"
    suffix = ".png" if content.kind == "still" else ".mp4"
    return PlannedItem(
        video_id=video_id,
        path=f"{group.name}/{dataset}/{video_id}{suffix}",
        split=split,
        site=group.name,
        dataset=dataset,
        kind=content.kind,
        camera=camera,
        labels=content.labels,
        attributes=content.attributes,
        num_frames=content.num_frames,
        seed=seed_key,
        frame_size=preset.frame_size,
        fps=preset.fps,
        clip_frames=preset.clip_frames,
        action=content.action,
        script=content.script,
    )


def _plan_dataset(
    preset: Preset, seed: int, purpose: str, group: _Group, dataset: str
) -> list[PlannedItem]:
    """Items of one dataset of one group. The order of the draws from the dataset's generator
    fixes the world: do not reorder them."""
    code = _DATASET_CODES[dataset]
    rng = _rng(seed, purpose, *group.key, 1, code)
    action_mix = np.asarray(group.action_mix, dtype=np.float64)
    action_mix = action_mix / action_mix.sum()
    splits = _splits(group.sizes[dataset])
    n = len(splits)

    # Draws for the whole dataset: actions, cameras, then the NTU-Bias-F subclasses of bias
    # clips and which ad videos are anomalous
    if group.balanced:
        actions = []
        for split in SPLITS:  # balanced within each split
            actions += _balanced_actions(rng, splits.count(split))
    else:
        actions = [int(rng.choice(len(ACTIONS), p=action_mix)) for _ in range(n)]
    camera_of = rng.integers(len(group.cameras), size=n)
    subclasses = (
        bias_subclasses(rng, splits, actions, group.bias_action) if dataset == "bias" else None
    )
    anomalous = anomalous_flags(rng, splits) if dataset == "ad" else None

    # Per item: its attributes, then whatever its dataset's label builder draws
    build = LABEL_BUILDERS[dataset]
    items = []
    for i in range(n):
        draw = ItemDraw(
            rng=rng,
            preset=preset,
            action=actions[i],
            attributes=_attributes(rng, group.prevalence, group.face_mix),
            action_mix=action_mix,
            subclass=None if subclasses is None else subclasses[i],
            anomalous=anomalous is not None and anomalous[i],
        )
        seed_key = [seed, PURPOSES[purpose], *group.key, 2, code, i]
        camera = group.cameras[int(camera_of[i])]
        items.append(
            _planned_item(group, dataset, i, splits[i], camera, build(draw), preset, seed_key)
        )
    return items


def _plan_group(preset: Preset, seed: int, purpose: str, group: _Group) -> list[PlannedItem]:
    """Items of one group (a client site, the central or the pre-training world)."""
    items: list[PlannedItem] = []
    for dataset in group.sizes:
        items += _plan_dataset(preset, seed, purpose, group, dataset)
    return items


def _plan_pretrain(preset: Preset, seed: int) -> WorldPlan:
    """The pre-training world: AR clips and stills from cameras of its own, uniform mixes."""
    purpose = "pretrain"
    cameras = [
        _camera(_rng(seed, purpose, _GROUP_PRETRAIN, i, 0), f"pretrain_cam_{i}")
        for i in range(preset.pretrain_cameras)
    ]
    group = _Group(
        name="pretrain",
        key=(_GROUP_PRETRAIN, 0),
        cameras=cameras,
        sizes={"ar": preset.pretrain_ar, "privacy": preset.pretrain_privacy},
        action_mix=_uniform_actions(),
        prevalence=PREVALENCE,
        face_mix=FACE_MIX,
        balanced=True,
    )
    items = _plan_group(preset, seed, purpose, group)
    return WorldPlan(preset, seed, purpose, [], cameras, None, items)


def _plan_evaluate(preset: Preset, seed: int) -> WorldPlan:
    """The evaluation world: non-IID client sites, then the central world with every dataset."""
    purpose = "evaluate"
    site_list = [_site(seed, purpose, i, preset.alpha) for i in range(preset.sites)]
    items: list[PlannedItem] = []
    for i, site in enumerate(site_list):
        group = _Group(
            name=site["id"],
            key=(_GROUP_SITE, i),
            cameras=[site["camera"]],
            sizes={"ar": preset.site_ar, "tad": preset.site_tad, "ad": preset.site_ad},
            action_mix=site["action_mix"],
            prevalence=site["prevalence"],
            face_mix=site["face_mix"],
            balanced=False,
        )
        items += _plan_group(preset, seed, purpose, group)
    cameras = [
        _camera(_rng(seed, purpose, _GROUP_CENTRAL, i, 0), f"central_cam_{i}")
        for i in range(preset.central_cameras)
    ]
    bias_action = int(_rng(seed, purpose, _GROUP_WORLD).integers(len(ACTIONS)))
    central = _Group(
        name="central",
        key=(_GROUP_CENTRAL, 0),
        cameras=cameras,
        sizes={
            "ar": preset.central_ar,
            "tad": preset.central_tad,
            "ad": preset.central_ad,
            "privacy": preset.central_privacy,
            "bias": preset.central_bias,
        },
        action_mix=_uniform_actions(),
        prevalence=PREVALENCE,
        face_mix=FACE_MIX,
        balanced=True,
        bias_action=bias_action,
    )
    items += _plan_group(preset, seed, purpose, central)
    return WorldPlan(preset, seed, purpose, site_list, cameras, ACTIONS[bias_action], items)


def _uniform_actions() -> np.ndarray:
    """The action mix of the central and pre-training worlds: every action alike."""
    return np.full(len(ACTIONS), 1 / len(ACTIONS))  # (len(ACTIONS),)


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
    preset = resolve_preset(preset, sites, alpha)
    if purpose == "pretrain":
        return _plan_pretrain(preset, int(seed))
    return _plan_evaluate(preset, int(seed))
