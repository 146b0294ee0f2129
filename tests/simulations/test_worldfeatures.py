"""Tests for the central evaluation set built from a world and its features
(simulations.worldfeatures): stills with their attributes, and action videos carrying their
clip sequences, their action and their actors' attributes (the video privacy protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from common.config import EncoderConfig, FeaturesConfig
from common.encoders import create_encoder
from common.evaluation import EvaluationSet
from common.features import FeatureStore, extract_features
from simulations.world import ACTIONS, ANOMALIES, ATTRIBUTES, generate_world, load_world
from simulations.worldfeatures import (
    central_evaluation_datasets,
    prepare_evaluation_set,
    world_items,
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("central")
    world_dir = generate_world(root / "world", preset="tiny", seed=3, progress=False)
    encoder = EncoderConfig(path="", dim=16)  # a random tiny3d: the join is under test
    path = prepare_evaluation_set(world_dir, root, encoder, FeaturesConfig(), progress=False)
    return load_world(world_dir), root / "central.h5", EvaluationSet.load(path)


def test_videos_carry_their_clip_sequences_actions_and_actors_attributes(prepared):
    world, store_path, evaluation_set = prepared
    assert evaluation_set.attributes == tuple(ATTRIBUTES)
    assert evaluation_set.tasks["ar"].classes == tuple(ACTIONS)
    with FeatureStore(store_path) as store:
        for split in ("train", "val", "test"):
            entries = world.manifest("ar", "central", split)
            videos = evaluation_set.tasks["ar"].splits[split]
            assert videos.clips.shape[:2] == (len(entries), 2)  # 32 frames = 2 clips of 16
            for i, entry in enumerate(entries):
                np.testing.assert_array_equal(
                    videos.clips[i], store.clip_features(entry["video_id"])
                )
                assert videos.labels["action"][i] == entry["labels"]["action"]
                assert list(videos.attributes[i]) == [entry["attributes"][a] for a in ATTRIBUTES]


def test_ad_videos_carry_the_kind_of_their_anomaly(prepared):
    world, _, evaluation_set = prepared
    assert evaluation_set.tasks["ad"].classes == tuple(ANOMALIES)
    for split in ("train", "val", "test"):
        entries = world.manifest("ad", "central", split)
        labels = evaluation_set.tasks["ad"].splits[split].labels
        want = [
            ANOMALIES.index(e["labels"]["anomalies"][0]["anomaly"])
            if e["labels"]["anomalous"]
            else -1
            for e in entries
        ]
        assert labels["kind"].tolist() == want
        assert (labels["kind"] >= 0).tolist() == labels["anomalous"].astype(bool).tolist()


def test_stills_carry_their_static_clip_and_attributes(prepared):
    world, store_path, evaluation_set = prepared
    with FeatureStore(store_path) as store:
        entries = world.manifest("privacy", "central", "test")
        stills = evaluation_set.stills["test"]
        assert stills.features.shape == (len(entries), 16)
        np.testing.assert_array_equal(
            stills.features[0], store.static_features(entries[0]["video_id"])[0]
        )
        assert list(stills.labels[-1]) == [entries[-1]["attributes"][a] for a in ATTRIBUTES]


def test_central_videos_are_encoded_without_the_static_clips_nothing_reads(prepared):
    world, store_path, _ = prepared
    with FeatureStore(store_path) as store:
        assert store.settings.static_clips == 0
        video = world.manifest("ar", "central", "train")[0]["video_id"]
        assert store.static_features(video).shape == (0, 16)
        assert store.clip_features(video).shape == (2, 16)


def test_a_central_store_made_with_static_clips_resumes_as_it_was(prepared, tmp_path):
    """A run folder of an older latentveil (static clips in every central video) resumes: the
    missing videos are added with the store's own settings instead of being refused."""
    world, _, fresh = prepared
    encoder_config = EncoderConfig(path="", dim=16)
    items = world_items(world, central_evaluation_datasets(world))
    extract_features(
        items[: len(items) // 2], create_encoder(encoder_config), tmp_path / "central.h5",
        FeaturesConfig(), progress=False,
    )  # fmt: skip
    path = prepare_evaluation_set(
        world.root, tmp_path, encoder_config, FeaturesConfig(), progress=False
    )
    with FeatureStore(tmp_path / "central.h5") as store:
        assert store.settings.static_clips == FeaturesConfig().static_clips
        assert len(store) == len(items)
        assert store.static_features(items[-1].video_id).shape == (2, 16)
    resumed = EvaluationSet.load(path)
    for split, videos in fresh.tasks["ar"].splits.items():
        np.testing.assert_array_equal(resumed.tasks["ar"].splits[split].clips, videos.clips)
