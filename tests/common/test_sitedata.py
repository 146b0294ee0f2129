"""Tests for a site's feature store (common.sitedata): the static clips it holds follow what the
privacy budget reads."""

import json

import numpy as np
import pytest

from common.config import EncoderConfig, FeaturesConfig, load_config
from common.features import FeatureStore
from common.sitedata import (
    SiteDataError,
    ensure_site_features,
    load_site_data,
    site_static_clips,
)
from tests.common.test_features import write_video

ENCODER = EncoderConfig(name="tiny3d", path="", frame_size=32, dim=16, seed=0)
FEATURES = FeaturesConfig(static_clips=2, dtype="float32", batch_size=4)


def make_site(root, n: int):
    """A site folder with n real AR videos of 32 frames (2 clips each) and their manifest."""
    site = root / "site_00"
    (site / "ar").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        video_id = f"site_00_ar_{i:05d}"
        path = site / "ar" / f"{video_id}.mp4"
        if not path.exists():
            write_video(path, 32, seed=i)
        entry = {"video_id": video_id, "path": f"site_00/ar/{video_id}.mp4", "split": "train",
                 "labels": {"action": i % 2}}  # fmt: skip
        lines.append(json.dumps(entry))
    (site / "ar" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return site


@pytest.mark.parametrize(("views", "expected"), [("clips", 0), ("static", 2), ("both", 2)])
def test_a_site_keeps_static_clips_only_when_the_budget_reads_them(views, expected):
    config = load_config(None, [f"loss.budget_views={views}", "features.static_clips=2"])
    assert site_static_clips(config.features, config.loss) == expected


def test_a_site_encoded_without_static_clips_trains_on_the_same_clips(tmp_path):
    site = make_site(tmp_path, 4)
    lean, full = tmp_path / "lean.h5", tmp_path / "full.h5"
    ensure_site_features(site, lean, ENCODER, FEATURES, static_clips=0)
    ensure_site_features(site, full, ENCODER, FEATURES)
    with FeatureStore(lean) as store:
        assert store.settings.static_clips == 0
    without = load_site_data(site, lean, ("ar",), "train")["ar"]
    with_static = load_site_data(site, full, ("ar",), "train")["ar"]
    assert without.static_features.shape == (4, 0, 16)
    assert with_static.static_features.shape == (4, 2, 16)
    # Equal up to float rounding: the clips are batched with other videos' clips.
    np.testing.assert_allclose(
        without.clip_features, with_static.clip_features, rtol=1e-5, atol=1e-6
    )


def test_a_store_with_static_clips_serves_a_run_that_needs_none_but_not_the_reverse(tmp_path):
    site = make_site(tmp_path, 3)
    store_path = tmp_path / "site.h5"
    ensure_site_features(site, store_path, ENCODER, FEATURES)
    encoded = store_path.stat().st_mtime_ns
    ensure_site_features(site, store_path, ENCODER, FEATURES, static_clips=0)
    assert store_path.stat().st_mtime_ns == encoded  # complete: nothing encoded again

    make_site(tmp_path, 4)  # a new video: appended with the store's own static clips
    ensure_site_features(site, store_path, ENCODER, FEATURES, static_clips=0)
    with FeatureStore(store_path) as store:
        assert len(store) == 4 and store.settings.static_clips == 2
        assert store.static_features("site_00_ar_00003").shape == (2, 16)

    lean = tmp_path / "lean.h5"
    ensure_site_features(site, lean, ENCODER, FEATURES, static_clips=0)
    with pytest.raises(SiteDataError, match=r"holds 0 static clip\(s\) per video .* needs 2"):
        ensure_site_features(site, lean, ENCODER, FEATURES)
