"""The testbed's premise with the shipped encoder: actions are temporal, attributes static.

Uses the built-in pre-trained tiny3d (its SHA-256 is checked) on a small world generated here.
The full-size numbers (cMAP >= 70, AR >= 80 on the default world) are measured by
`latentveil leakage --config simulations/configs/default.yaml --out runs/leakage`.
"""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from common.attackers import AttackData, Split, SuiteSettings, run_attacker
from common.config import EncoderConfig, FeaturesConfig
from common.encoders import BUILTIN_TINY3D, create_encoder
from common.features import FeatureStore, extract_features
from common.probes import run_linear_probe
from simulations.world import ACTIONS, ATTRIBUTES, PRESETS, generate_world, load_world
from simulations.worldfeatures import world_items

RECIPE = BUILTIN_TINY3D.with_suffix(".json")


def test_the_shipped_encoder_matches_its_recorded_hash_and_loads():
    recipe = json.loads(RECIPE.read_text())
    assert hashlib.sha256(BUILTIN_TINY3D.read_bytes()).hexdigest() == recipe["sha256"]
    assert recipe["command"].startswith("latentveil pretrain-encoder")
    # The default config loads it, and it is the network its recipe says was trained.
    encoder = create_encoder(EncoderConfig())
    trained = recipe["config"]
    assert encoder.name == "tiny3d"
    for key in ("dim", "frame_size", "clip_len", "widths", "pooling"):
        assert encoder.arch[key] == trained[key], key
    assert (encoder.dim, encoder.frame_size, encoder.clip_len) == (
        trained["dim"],
        trained["frame_size"],
        trained["clip_len"],
    )
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.fixture(scope="module")
def small_central_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("testbed")
    preset = replace(
        PRESETS["tiny"], name="testbed", frame_size=96, sites=1, central_ar=(160, 48, 160),
        central_privacy=(160, 48, 160),
    )  # fmt: skip
    world = load_world(generate_world(root / "world", preset=preset, progress=False))
    store = root / "central.h5"
    extract_features(
        world_items(world, ["central/ar", "central/privacy"]),
        create_encoder(EncoderConfig()),
        store,
        FeaturesConfig(static_clips=2, eval_clips=5),
        progress=False,
    )
    return world, store


@pytest.mark.integration
def test_actions_need_motion_a_single_frame_does_not_give_them_away(small_central_world):
    world, store = small_central_world
    with FeatureStore(store) as features:

        def split(name: str, kind: str) -> Split:
            entries = world.manifest("ar", "central", name)
            x = np.stack([getattr(features, kind)(e["video_id"]) for e in entries])
            return Split(x, np.array([e["labels"]["action"] for e in entries]))

        clips = [split(s, "eval_clip_features") for s in ("train", "val", "test")]
        statics = [split(s, "static_features") for s in ("train", "val", "test")]
    motion = run_linear_probe(*clips, num_classes=len(ACTIONS), epochs=60, batch_size=64)
    still = run_linear_probe(*statics, num_classes=len(ACTIONS), epochs=60, batch_size=64)
    assert motion.test_top1 >= 60
    assert still.test_top1 <= motion.test_top1 / 2


@pytest.mark.integration
def test_private_attributes_are_readable_from_a_single_frame(small_central_world):
    world, store = small_central_world
    with FeatureStore(store) as features:
        splits = []
        for name in ("train", "val", "test"):
            entries = world.manifest("privacy", "central", name)
            x = np.stack([features.static_features(e["video_id"])[0] for e in entries])
            y = np.array([[e["attributes"][a] for a in ATTRIBUTES] for e in entries], np.float32)
            splits.append(Split(x, y))
    result = run_attacker("mlp", AttackData(*splits), SuiteSettings(max_epochs=40, batch_size=32))
    assert result.test_cmap >= 1.5 * result.chance_cmap
