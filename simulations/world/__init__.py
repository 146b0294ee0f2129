"""The synthetic camera-site world: planned, rendered to real mp4 / PNG files, with manifests.

No public video dataset can be downloaded here, so the project's demo and tests run on a world
that keeps the paper's premise testable: PRIVATE ATTRIBUTES ARE STATIC AND SPATIAL (visible in
any single frame), UTILITY IS TEMPORAL (what the body does over time). `simulations.render`
draws the frames; this package decides what every file shows, writes it, and reads it back.

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
with fixed settings and without its AVX-512 code (which reads memory it never wrote:
`x264_options`), so the same seed gives byte-identical files and manifests (with the same
PyAV / libx264 build; another build may encode other bytes of the same frames).
`plan_world` decides everything without rendering; `item_frames` renders one planned item in
memory.

Reruns: a file is kept when its SHA-256 matches the one recorded for it (in a manifest, or in
`.journal.jsonl` while a run is under way), otherwise it is rendered again; temporary files of
an interrupted run are deleted. Manifests and world.json are written last.

Purposes: "evaluate" (client sites + central world) and "pretrain" (a disjoint world to
pre-train the encoder on). They differ in the SeedSequence entropy (purpose code 0 vs 1), so no
camera background, light, person or motion is shared between them, even with the same seed.

Modules, in the order a world is made: `schema` (names, manifest keys, WorldError), `presets`
(sizes), `labels` (one label builder per dataset), `planning` (`plan_world` and its
`PlannedItem`s), `writing` (`generate_world`, `item_frames`), `reading` (`load_world`,
`read_manifest`). Import from the package: `from simulations.world import ...`.
"""

from __future__ import annotations

from simulations.world.labels import BIAS_MAJORITY, LABEL_BUILDERS, LongScript
from simulations.world.planning import (
    FACE_MIX,
    PREVALENCE,
    PlannedItem,
    WorldPlan,
    plan_world,
)
from simulations.world.presets import PRESETS, Preset, resolve_preset
from simulations.world.reading import World, load_world, read_manifest
from simulations.world.schema import (
    ACTIONS,
    ANOMALIES,
    ATTRIBUTES,
    DATASETS,
    FACE_ENCODING,
    FACE_STATES,
    MANIFEST_KEYS,
    PURPOSES,
    SPLITS,
    SUBCLASSES,
    WORLD_VERSION,
    WorldError,
)
from simulations.world.writing import (
    X264_OPTIONS,
    generate_world,
    item_frames,
    write_mp4,
    x264_options,
)

__all__ = [
    "ACTIONS",
    "ANOMALIES",
    "ATTRIBUTES",
    "BIAS_MAJORITY",
    "DATASETS",
    "FACE_ENCODING",
    "FACE_MIX",
    "FACE_STATES",
    "LABEL_BUILDERS",
    "MANIFEST_KEYS",
    "PRESETS",
    "PREVALENCE",
    "PURPOSES",
    "SPLITS",
    "SUBCLASSES",
    "WORLD_VERSION",
    "X264_OPTIONS",
    "LongScript",
    "PlannedItem",
    "Preset",
    "World",
    "WorldError",
    "WorldPlan",
    "generate_world",
    "item_frames",
    "load_world",
    "plan_world",
    "read_manifest",
    "resolve_preset",
    "write_mp4",
    "x264_options",
]
