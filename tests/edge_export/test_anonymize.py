"""`latentveil anonymize`: videos in, anonymized features out, through an artifact."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from common.aam import anonymize_in_windows
from common.config import FeaturesConfig
from common.features import FeatureStore, extract_features, find_videos
from common.video import probe_video
from edge_export.anonymize import anonymize_videos, collect_videos
from edge_export.artifact import (
    EdgeArtifactError,
    adapter_from_run,
    load_artifact,
    source_from_run,
)
from simulations.cli import main
from tests.edge_export.generated import make_run, write_video

REAL_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_videos"
CLIP = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def artifact(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "onnx"
    assert main(["export", "--run", str(run), "--backend", "onnx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three good videos (2, 4 and 1 clips, one in a subfolder) and three bad files."""
    folder = tmp_path_factory.mktemp("videos")
    (folder / "sub").mkdir()
    write_video(folder / "a.mp4", 40, seed=1)
    write_video(folder / "b.mp4", 70, seed=2)
    write_video(folder / "sub" / "c.mp4", 16, seed=3)
    write_video(folder / "short.mp4", 10, seed=4)
    whole = write_video(folder.parent / "whole.mp4", 120, seed=5, faststart=True)
    data = whole.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return folder


GOOD = {"a": 40 // CLIP, "b": 70 // CLIP, "sub__c": 1}
BAD = {"short", "truncated", "junk"}


def eager_features(run, folder, tmp_path):
    """What the artifact must reproduce: the eager encoder's features of the same clips, and
    the eager adapter over them in the run's windows."""
    source = source_from_run(run)
    config = FeaturesConfig(clip_step=CLIP, eval_clips=0, dtype="float32")
    store = tmp_path / "eager.h5"
    items = [i for i in find_videos(folder) if i.video_id in GOOD]
    extract_features(items, source.encoder, store, config, progress=False)
    with FeatureStore(store) as features:
        raw = {v: features.clip_features(v) for v in GOOD}
    adapter = adapter_from_run(run, source.encoder.dim)
    with torch.no_grad():
        anonymized = {
            v: anonymize_in_windows(adapter, torch.from_numpy(f)[None], source.window)[0].numpy()
            for v, f in raw.items()
        }
    return raw, anonymized


def test_anonymize_writes_one_anonymized_feature_per_clip_and_reports_the_bad_files(
    run, artifact, videos, tmp_path, capsys
):
    out = tmp_path / "anon.h5"
    code = main(["anonymize", str(videos), "--artifact", str(artifact), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "3 files failed" in err
    for name in BAD:
        assert f"  {name}: " in err
    assert "truncated or damaged" in err.split("  truncated: ")[1].splitlines()[0]

    raw, anonymized = eager_features(run, videos, tmp_path)
    runtime = load_artifact(artifact)
    with FeatureStore(out) as store:
        assert sorted(store.video_ids()) == sorted(GOOD)
        assert store.settings.anonymized == f"{runtime.adapter_hash}/window=4"
        assert store.settings.backend == "onnx"
        for video_id, clips in GOOD.items():
            got = store.clip_features(video_id)
            assert got.shape == (clips, runtime.dim)
            np.testing.assert_allclose(got, anonymized[video_id], rtol=0, atol=1e-4)
            assert not np.allclose(got, raw[video_id], atol=1e-2)  # no raw feature released


def test_a_second_run_resumes_and_only_adds_what_is_new(artifact, videos, tmp_path):
    out = tmp_path / "anon.h5"
    runtime = load_artifact(artifact)
    items = [i for i in collect_videos([videos]) if i.video_id in GOOD]
    anonymize_videos(items[:2], runtime, out, progress=False)
    with h5py.File(out) as store:
        first = {v: store["videos"][v]["clip_features"][()] for v in store["videos"]}
    assert anonymize_videos(items, runtime, out, progress=False) == []
    with h5py.File(out) as store:
        assert sorted(store["videos"]) == sorted(GOOD)
        for video_id, features in first.items():
            np.testing.assert_array_equal(store["videos"][video_id]["clip_features"][()], features)


def test_raw_features_only_when_asked_and_partial_videos_only_when_allowed(
    run, artifact, videos, tmp_path
):
    runtime = load_artifact(artifact)
    items = collect_videos([videos])
    raw_store = tmp_path / "raw.h5"
    skipped = anonymize_videos(items, runtime, raw_store, raw=True, progress=False)
    assert {video_id for video_id, _ in skipped} == BAD
    raw, _ = eager_features(run, videos, tmp_path)
    with FeatureStore(raw_store) as store:
        assert store.settings.anonymized == ""
        for video_id in GOOD:
            np.testing.assert_allclose(store.clip_features(video_id), raw[video_id], atol=1e-4)

    partial = tmp_path / "partial.h5"
    truncated = [i for i in items if i.video_id == "truncated"]
    assert anonymize_videos(truncated, runtime, partial, allow_partial=True, progress=False) == []
    decodable = probe_video(truncated[0].path).num_frames
    assert 0 < decodable < 120
    with FeatureStore(partial) as store:
        assert store.clip_features("truncated").shape[0] == decodable // CLIP


def test_an_encoder_only_artifact_writes_raw_features_but_refuses_to_anonymize(
    run, videos, tmp_path
):
    out = tmp_path / "encoder"
    assert main(["export", "--run", str(run), "--backend", "torch", "--encoder-only",
                 "--out", str(out)]) == 0  # fmt: skip
    runtime = load_artifact(out)
    with pytest.raises(EdgeArtifactError, match="encoder-only"):
        anonymize_videos(collect_videos([videos]), runtime, tmp_path / "x.h5")
    with pytest.raises(EdgeArtifactError, match="window 5 is outside"):
        anonymize_videos([], load_artifact(out), tmp_path / "x.h5", raw=True, window=5)


def test_export_refuses_a_run_that_has_shipped_no_adapter(run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "adapter.npz").unlink()
    code = main(["export", "--run", str(unfinished), "--out", str(tmp_path / "a")])
    assert code == 2 and "has shipped no adapter yet" in capsys.readouterr().err


@pytest.mark.skipif(not REAL_VIDEOS.is_dir(), reason=f"no shared real videos at {REAL_VIDEOS}")
def test_every_shared_real_video_gives_one_feature_per_complete_clip(artifact, tmp_path):
    runtime = load_artifact(artifact)
    items = collect_videos([REAL_VIDEOS])
    out = tmp_path / "real.h5"
    assert anonymize_videos(items, runtime, out, progress=False) == []
    with FeatureStore(out) as store:
        assert sorted(store.video_ids()) == sorted(i.video_id for i in items)
        for item in items:
            expected = probe_video(item.path).num_frames // CLIP
            assert store.clip_features(item.video_id).shape == (expected, runtime.dim)


def test_export_verify_on_the_command_line(artifact, tmp_path, capsys):
    assert main(["export", "--verify", str(artifact)]) == 0
    out = capsys.readouterr().out
    assert "encoder: max abs difference" in out and "passes its parity check" in out
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    model = next(p for p in copy.iterdir() if p.name.startswith("encoder."))
    model.write_bytes(model.read_bytes()[:100])
    assert main(["export", "--verify", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "changed since export" in err and len(err.splitlines()) == 1
