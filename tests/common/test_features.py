"""Tests for the HDF5 feature store: extraction, resume, encoder mismatch, npy exchange."""

from dataclasses import replace
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from PIL import Image

import common.features as features_module
from common.config import EncoderConfig, FeaturesConfig
from common.encoders import create_encoder
from common.features import (
    FeatureStore,
    FeatureStoreError,
    VideoItem,
    export_npy,
    extract_features,
    find_videos,
    import_npy,
)
from common.video import VideoError

SIZE = 32


def write_video(path: Path, num_frames: int, seed: int) -> Path:
    """A small H.264 mp4 whose frames differ from each other and from other seeds."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            frame = np.roll(base, shift=i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def encoder():
    return create_encoder(EncoderConfig(name="tiny3d", path="", frame_size=SIZE, dim=16, seed=0))


@pytest.fixture
def videos(tmp_path) -> list[VideoItem]:
    folder = tmp_path / "videos"
    folder.mkdir()
    items = [
        VideoItem(f"v{i}", write_video(folder / f"v{i}.mp4", 32 + 8 * (i % 3), seed=i))
        for i in range(5)
    ]
    image = folder / "still.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 120, np.uint8)).save(image)
    return [*items, VideoItem("still", image)]


CONFIG = FeaturesConfig(static_clips=2, eval_clips=5, dtype="float32", batch_size=4)


def test_extract_writes_the_documented_layout(tmp_path, videos, encoder):
    out = tmp_path / "feats.h5"
    assert extract_features(videos, encoder, out, CONFIG, progress=False) == []
    with FeatureStore(out) as store:
        assert store.video_ids() == sorted(v.video_id for v in videos)
        assert store.settings.encoder_id == encoder.encoder_id
        assert store.settings.dim == 16 and store.settings.clip_len == 16
        v1 = store.clip_features("v1")  # 40 frames -> 2 non-overlapping clips
        assert v1.shape == (2, 16) and v1.dtype == np.float32
        assert store.eval_clip_features("v1").shape == (5, 16)
        assert store.static_features("v1").shape == (2, 16)
        assert store.clip_features("still").shape == (0, 16)
        assert store.static_features("still").shape == (1, 16)
        assert store.source("v0")["num_frames"] == 32
        assert store.source("v0")["source_size"] == videos[0].path.stat().st_size
    assert not (tmp_path / "feats.h5.parts").exists()


def test_videos_without_static_clips_keep_their_clips_and_stills_their_one(
    tmp_path, videos, encoder
):
    full, lean = tmp_path / "full.h5", tmp_path / "lean.h5"
    extract_features(videos, encoder, full, CONFIG, progress=False)
    extract_features(videos, encoder, lean, CONFIG, progress=False, static_clips=0)
    with FeatureStore(full) as with_static, FeatureStore(lean) as without:
        assert without.settings.static_clips == 0
        assert without.settings == replace(with_static.settings, static_clips=0)
        for video_id in ("v0", "v1", "v2"):
            assert without.static_features(video_id).shape == (0, 16)
            # Equal up to float rounding: the clips are batched with other videos' clips.
            for kind in ("clip_features", "eval_clip_features"):
                np.testing.assert_allclose(
                    getattr(without, kind)(video_id),
                    getattr(with_static, kind)(video_id),
                    rtol=1e-5,
                    atol=1e-6,
                )
        np.testing.assert_allclose(
            without.static_features("still"),
            with_static.static_features("still"),
            rtol=1e-5,
            atol=1e-6,
        )
    # A store's static clips are part of its settings: the other count is refused.
    with pytest.raises(FeatureStoreError, match="static_clips 0 != 2"):
        extract_features(videos, encoder, lean, CONFIG, progress=False)
    with pytest.raises(ValueError, match="static_clips must be >= 0"):
        extract_features(videos, encoder, lean, CONFIG, progress=False, static_clips=-1)


def test_features_equal_a_direct_encoder_call(tmp_path, videos, encoder):
    import torch

    from common.video import preprocess_clips, read_frames

    out = tmp_path / "feats.h5"
    extract_features(videos[:1], encoder, out, CONFIG, progress=False)
    frames = read_frames(videos[0].path, list(range(16, 32)))[None]  # second clip (1, 16, H, W, 3)
    tensor = preprocess_clips(
        frames, encoder.frame_size, encoder.resize_short, encoder.mean, encoder.std
    )
    with torch.no_grad():
        expected = encoder(tensor).numpy()[0]
    with FeatureStore(out) as store:
        np.testing.assert_allclose(store.clip_features("v0")[1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
def test_batches_reach_the_encoder_in_its_layout_with_the_values_of_the_plain_layout(
    tmp_path, videos, encoder, monkeypatch, channels_last
):
    """Extraction hands tiny3d its batches already in the channels-last layout it convolves
    (no copy there), and an encoder that does not declare it contiguous ones (a `module`
    encoder may view its input), each holding exactly the clips `preprocess_clips` makes."""
    import torch

    from common.video import preprocess_clips, read_frames

    assert encoder.channels_last_input  # tiny3d's
    if not channels_last:
        monkeypatch.setattr(encoder.backbone, "channels_last_input", False)
    batches: list[torch.Tensor] = []
    forward = encoder.forward

    def recording(clips: torch.Tensor) -> torch.Tensor:
        batches.append(clips.clone(memory_format=torch.preserve_format))
        return forward(clips)

    monkeypatch.setattr(encoder, "forward", recording)
    config = replace(CONFIG, eval_clips=0, batch_size=2)
    extract_features(videos[:1], encoder, tmp_path / "f.h5", config, False, static_clips=0)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert batches and all(b.is_contiguous(memory_format=layout) for b in batches)
    frames = read_frames(videos[0].path, list(range(32)))  # v0: 32 frames, two clips
    expected = preprocess_clips(
        frames.reshape(2, 16, *frames.shape[1:]),
        encoder.frame_size, encoder.resize_short, encoder.mean, encoder.std,
    )  # fmt: skip
    assert torch.equal(torch.cat(batches), expected)


def test_float16_store_holds_the_float32_features_rounded(tmp_path, videos, encoder):
    half, full = tmp_path / "feats16.h5", tmp_path / "feats32.h5"
    extract_features(videos[:2], encoder, half, replace(CONFIG, dtype="float16"), progress=False)
    extract_features(videos[:2], encoder, full, CONFIG, progress=False)
    with h5py.File(half) as handle:
        assert handle["videos/v0/clip_features"].dtype == np.float16
    with FeatureStore(half) as got, FeatureStore(full) as want:
        for vid in want.video_ids():
            for kind in ("clip_features", "eval_clip_features", "static_features"):
                # float16 keeps 11 significant bits: a relative rounding error of at most 2**-11
                np.testing.assert_allclose(
                    getattr(got, kind)(vid), getattr(want, kind)(vid), rtol=2**-11, atol=2**-24
                )


def test_interrupted_extraction_resumes_and_equals_an_uninterrupted_run(
    tmp_path, videos, encoder, monkeypatch
):
    monkeypatch.setattr(features_module, "SHARD_VIDEOS", 2)
    reference = tmp_path / "reference.h5"
    extract_features(videos, encoder, reference, CONFIG, progress=False)

    out = tmp_path / "feats.h5"
    calls = {"n": 0}
    real_cut = features_module._cut_clips

    def dying_cut(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # in the second shard
            raise KeyboardInterrupt
        return real_cut(*args, **kwargs)

    monkeypatch.setattr(features_module, "_cut_clips", dying_cut)
    with pytest.raises(KeyboardInterrupt):
        extract_features(videos, encoder, out, CONFIG, progress=False)
    assert not out.exists()
    parts = sorted((tmp_path / "feats.h5.parts").glob("*.h5"))
    assert len(parts) == 1, "the first shard is kept, the half-written one is not"

    encoded = []

    def counting_cut(path, *args, **kwargs):
        encoded.append(Path(path).stem)
        return real_cut(path, *args, **kwargs)

    monkeypatch.setattr(features_module, "_cut_clips", counting_cut)
    extract_features(videos, encoder, out, CONFIG, progress=False)
    # (decoding runs in threads, so the call order within a shard may vary)
    assert sorted(encoded) == ["still", "v2", "v3", "v4"], "finished videos were encoded again"
    with FeatureStore(out) as got, FeatureStore(reference) as want:
        assert got.video_ids() == want.video_ids()
        for vid in want.video_ids():
            for kind in ("clip_features", "eval_clip_features", "static_features"):
                np.testing.assert_array_equal(getattr(got, kind)(vid), getattr(want, kind)(vid))


def test_rerun_and_append_encode_only_what_is_new(tmp_path, videos, encoder, monkeypatch):
    out = tmp_path / "feats.h5"
    extract_features(videos[:3], encoder, out, CONFIG, progress=False)
    encoded = []
    real_cut = features_module._cut_clips
    monkeypatch.setattr(
        features_module,
        "_cut_clips",
        lambda p, *a, **k: (encoded.append(Path(p).stem), real_cut(p, *a, **k))[1],
    )
    extract_features(videos, encoder, out, CONFIG, progress=False)
    assert sorted(encoded) == ["still", "v3", "v4"]
    # A changed source file is encoded again.
    write_video(videos[0].path, 48, seed=42)
    encoded.clear()
    extract_features(videos, encoder, out, CONFIG, progress=False)
    assert encoded == ["v0"]
    with FeatureStore(out) as store:
        assert store.clip_features("v0").shape == (3, 16) and len(store) == 6


def test_appending_with_another_encoder_is_refused(tmp_path, videos, encoder):
    out = tmp_path / "feats.h5"
    extract_features(videos[:2], encoder, out, CONFIG, progress=False)
    other = create_encoder(EncoderConfig(name="tiny3d", path="", frame_size=SIZE, dim=16, seed=1))
    with pytest.raises(FeatureStoreError, match=f"encoder '{encoder.encoder_id}'"):
        extract_features(videos, other, out, CONFIG, progress=False)
    with pytest.raises(FeatureStoreError, match="static_clips"):
        extract_features(
            videos, encoder, out, FeaturesConfig(static_clips=3, dtype="float32"), progress=False
        )
    with FeatureStore(out) as store:
        assert len(store) == 2


def test_bad_video_raises_naming_it_or_is_skipped(tmp_path, videos, encoder):
    bad = tmp_path / "videos" / "broken.mp4"
    bad.write_bytes(videos[0].path.read_bytes()[:300])
    items = [*videos[:2], VideoItem("broken", bad)]
    with pytest.raises(VideoError, match="broken.mp4"):
        extract_features(items, encoder, tmp_path / "a.h5", CONFIG, progress=False)
    assert not (tmp_path / "a.h5.parts").exists(), "no shard finished: no folder left behind"
    skipped = extract_features(
        items, encoder, tmp_path / "b.h5", CONFIG, progress=False, on_error="skip"
    )
    assert [vid for vid, _ in skipped] == ["broken"]
    with FeatureStore(tmp_path / "b.h5") as store:
        assert store.video_ids() == ["v0", "v1"]


def test_a_second_extraction_into_the_same_store_is_refused_while_one_runs(
    tmp_path, videos, encoder
):
    out = tmp_path / "feats.h5"
    with features_module._store_lock(out):
        with pytest.raises(FeatureStoreError, match="another extraction is writing"):
            extract_features(videos, encoder, out, CONFIG, progress=False)
    extract_features(videos[:1], encoder, out, CONFIG, progress=False)  # free again
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_files_that_differ_only_by_extension_keep_distinct_ids(tmp_path, videos):
    folder = tmp_path / "videos"
    (folder / "v0.mov").write_bytes((folder / "v0.mp4").read_bytes())
    ids = [item.video_id for item in find_videos(folder)]
    assert "v0.mov" in ids and "v0.mp4" in ids and "v1" in ids and "v0" not in ids


def test_a_video_shorter_than_one_clip_is_named(tmp_path, encoder):
    short = write_video(tmp_path / "short.mp4", 10, seed=0)
    with pytest.raises(VideoError, match=r"short\.mp4: video of 10 frames is shorter than one"):
        extract_features([VideoItem("short", short)], encoder, tmp_path / "s.h5", CONFIG,
                         progress=False)  # fmt: skip


def test_store_errors(tmp_path):
    with pytest.raises(FeatureStoreError, match="not found"):
        FeatureStore(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(FeatureStoreError, match="junk.h5"):
        FeatureStore(junk)


def test_find_videos_uses_relative_paths_as_ids(tmp_path, videos):
    found = find_videos(tmp_path / "videos")
    assert [item.video_id for item in found] == sorted(["v0", "v1", "v2", "v3", "v4", "still"])
    # one file is a data set of one video, named by its stem
    assert find_videos(videos[1].path) == [VideoItem("v1", videos[1].path)]
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    with pytest.raises(FeatureStoreError, match="notes.txt is neither a folder nor a video"):
        find_videos(notes)


def test_npy_round_trip(tmp_path, videos, encoder):
    out = tmp_path / "feats.h5"
    extract_features(videos, encoder, out, CONFIG, progress=False)
    assert export_npy(out, tmp_path / "npy") == 6
    assert np.load(tmp_path / "npy" / "v2.npy").shape == (3, 16)
    assert import_npy(tmp_path / "npy", tmp_path / "imported.h5", encoder_id="external-test") == 6
    with FeatureStore(tmp_path / "imported.h5") as imported, FeatureStore(out) as original:
        assert imported.settings.encoder_id == "external-test"
        for vid in original.video_ids():
            np.testing.assert_array_equal(imported.clip_features(vid), original.clip_features(vid))


def test_npy_import_rejects_bad_arrays(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((4, 8), np.float32))
    np.save(folder / "b.npy", np.zeros((4, 9), np.float32))
    with pytest.raises(FeatureStoreError, match="feature width"):
        import_npy(folder, tmp_path / "x.h5", "ext")
    np.save(folder / "b.npy", np.zeros((4,), np.float32))
    with pytest.raises(FeatureStoreError, match=r"b\.npy.*\(T, d\)"):
        import_npy(folder, tmp_path / "x.h5", "ext")
    np.save(folder / "b.npy", np.full((4, 8), np.nan, np.float32))
    with pytest.raises(FeatureStoreError, match="non-finite"):
        import_npy(folder, tmp_path / "x.h5", "ext")
    assert not (tmp_path / "x.h5").exists()
