"""Tests for common.video: exact frames against a sequential PyAV decode, errors, clips, preprocess.

The reference everywhere is what `av.open(path).decode(video=0)` yields, converted with
`to_ndarray(format="rgb24")`, up to the first decoding error.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from common.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoError,
    VideoInfo,
    choose_backend,
    clear_video_cache,
    clip_frame_indices,
    clip_starts,
    eval_clip_starts,
    preprocess_clips,
    preprocess_frames,
    probe_video,
    read_frames,
    static_clip,
    static_frame_indices,
)

REAL_VIDEOS = Path(__file__).resolve().parents[3] / "shared/data/real_videos"
REAL_FILES = (
    sorted(p for p in REAL_VIDEOS.iterdir() if p.suffix in {".mp4", ".avi", ".mkv"})
    if REAL_VIDEOS.is_dir()
    else []
)
NO_REAL = pytest.mark.skip(reason=f"{REAL_VIDEOS} is absent (only the shared workspace has it)")
REAL_PARAMS = [pytest.param(p, id=p.name) for p in REAL_FILES] or [
    pytest.param(None, marks=NO_REAL)
]

HEIGHT, WIDTH, NUM_FRAMES = 96, 128, 48


# ---------------------------------------------------------------------------------------------
# Helpers


def reference_decode(path: Path) -> np.ndarray:
    """Frames of a full sequential PyAV decode, up to the first decoding error: (N, H, W, 3)."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, IndexError):  # IndexError: no video stream at all
        pass
    if not frames:
        return np.empty((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


def spread_indices(n: int, seed: int = 0) -> np.ndarray:
    """Last frame first, then jumps backwards and forwards, duplicates and random picks."""
    fixed = [n - 1, 0, n // 2, n // 2, 3 % n, n - 2, 1 % n, n // 3, (2 * n) // 3, n - 1, 0]
    randoms = np.random.default_rng(seed).integers(0, n, 10)
    return np.array(fixed + randoms.tolist())


def assert_frames_equal(got: np.ndarray, reference: np.ndarray, indices: np.ndarray, what: str):
    assert got.dtype == np.uint8 and got.shape == (len(indices), *reference.shape[1:]), what
    wrong = [int(i) for k, i in enumerate(indices) if not np.array_equal(got[k], reference[i])]
    assert not wrong, f"{what}: frames differ from the sequential decode at indices {wrong[:10]}"


def frame_for(index: int) -> np.ndarray:
    """A test frame whose top bar spells `index` in 8 black/white blocks."""
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :]
    frame[..., 1] = np.linspace(0, 255, HEIGHT, dtype=np.uint8)[:, None]
    frame[..., 2] = (index * 37) % 256
    for bit in range(8):
        block = slice(bit * WIDTH // 8, (bit + 1) * WIDTH // 8)
        frame[: HEIGHT // 4, block] = 255 if (index >> bit) & 1 else 0
    return frame


def index_of(frame: np.ndarray) -> int:
    """Read back the index a `frame_for` frame spells (survives lossy coding)."""
    row = HEIGHT // 8
    bits = [frame[row, (2 * bit + 1) * WIDTH // 16].mean() > 127 for bit in range(8)]
    return sum(1 << bit for bit, on in enumerate(bits) if on)


def write_video(
    path: Path,
    codec: str,
    num_frames: int = NUM_FRAMES,
    gop: int = 8,
    b_frames: int = 2,
    pix_fmt: str = "yuv420p",
    container_options: dict[str, str] | None = None,
) -> Path:
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, pix_fmt
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = b_frames
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_for(index), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


GENERATED = {
    # name: (encoder, pix_fmt, what auto picks, whether forced decord is exact)
    "h264.mp4": ("libx264", "yuv420p", "decord", True),
    "h264_bframes.avi": ("libx264", "yuv420p", "pyav", True),  # decord's seeking breaks here
    "mpeg4_bframes.avi": ("mpeg4", "yuv420p", "pyav", False),
    "mjpeg.avi": ("mjpeg", "yuvj420p", "pyav", False),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        name: write_video(
            folder / name, codec, b_frames=0 if codec == "mjpeg" else 2, pix_fmt=pix_fmt
        )
        for name, (codec, pix_fmt, _, _) in GENERATED.items()
    }


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_video_cache()
    yield
    clear_video_cache()


# ---------------------------------------------------------------------------------------------
# The exact-frame contract on the shared real videos


@pytest.mark.parametrize("path", REAL_PARAMS)
def test_real_video_matches_sequential_decode(path: Path):
    reference = reference_decode(path)
    n = len(reference)
    info = probe_video(path)
    assert info == VideoInfo(n, info.fps, *reference.shape[1:3], info.codec)
    assert info.fps > 0

    # Probed already, so auto reads with decord here wherever its checks pass.
    every = np.arange(n)
    assert_frames_equal(read_frames(path, every, backend="auto"), reference, every, "auto, all")
    spread = spread_indices(n)
    assert_frames_equal(read_frames(path, spread), reference, spread, "auto, spread")
    clear_video_cache()  # a first read is served by the probing PyAV pass
    assert_frames_equal(read_frames(path, spread), reference, spread, "auto, first read")
    got = read_frames(path, spread, backend="pyav")
    assert_frames_equal(got, reference, spread, "pyav")

    choice = choose_backend(path)
    assert choice.reason
    if choice.backend == "decord":  # decord promises exactness where auto uses it
        got = read_frames(path, spread, backend="decord")
        assert_frames_equal(got, reference, spread, "decord")
    if path.suffix == ".avi" or info.codec not in {"h264", "hevc", "vp8", "vp9"}:
        assert choice.backend == "pyav", choice.reason


# ---------------------------------------------------------------------------------------------
# The same on generated videos (run everywhere)


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_video_matches_sequential_decode(generated, name: str):
    path = generated[name]
    reference = reference_decode(path)
    assert [index_of(frame) for frame in reference] == list(range(NUM_FRAMES))
    assert probe_video(path).num_frames == NUM_FRAMES

    order = np.random.default_rng(1).permutation(NUM_FRAMES)
    indices = np.concatenate([order, spread_indices(NUM_FRAMES)])
    _, _, auto_choice, decord_exact = GENERATED[name]
    for backend in ("auto", "pyav", "decord"):
        if backend == "decord" and not decord_exact:
            with pytest.warns(UserWarning, match="may differ from the reference"):
                read_frames(path, indices, backend=backend)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # exact reads must not warn
            got = read_frames(path, indices, backend=backend)
        assert_frames_equal(got, reference, indices, f"{name}, {backend}")
        assert [index_of(frame) for frame in got] == indices.tolist()
    assert choose_backend(path).backend == auto_choice
    spread = spread_indices(NUM_FRAMES)  # once decord's verdict is cached
    assert_frames_equal(read_frames(path, spread), reference, spread, f"{name}, auto again")


def test_auto_falls_back_when_decord_frames_differ(generated, monkeypatch):
    # The sampled-frame check is the last line of defence: if decord's frames ever differ
    # (here: one channel of one pixel flipped), auto must notice and read with PyAV.
    import common.video.decode as video

    path = generated["h264.mp4"]
    reference = reference_decode(path)
    probe_video(path)
    real_to_numpy = video._to_numpy

    def off_by_one(batch):
        frames = real_to_numpy(batch).copy()
        frames[..., 0, 0, 0] ^= 1
        return frames

    monkeypatch.setattr(video, "_to_numpy", off_by_one)
    indices = spread_indices(NUM_FRAMES)
    assert_frames_equal(read_frames(path, indices), reference, indices, "after fallback")
    choice = choose_backend(path)
    assert choice.backend == "pyav" and "differs from the sequential PyAV decode" in choice.reason


def test_auto_refuses_decord_seeking_in_avi(generated):
    # decord maps frame numbers through an index AVI does not have (decord issues 195, 252);
    # forcing decord must then read in order and still give the right frames.
    path = generated["h264_bframes.avi"]
    choice = choose_backend(path)
    assert choice.backend == "pyav" and "avi" in choice.reason
    reference = reference_decode(path)
    indices = np.array([NUM_FRAMES - 1, 30, 7, 40, 0, 30])
    assert_frames_equal(read_frames(path, indices, backend="decord"), reference, indices, "avi")


def test_forced_decord_warns_where_its_decoder_differs(generated):
    path = generated["mpeg4_bframes.avi"]
    with pytest.warns(UserWarning, match="mpeg4"):
        read_frames(path, [0, 5], backend="decord")


def test_hevc_mp4_matches_sequential_decode(tmp_path):
    if "libx265" not in av.codecs_available:
        pytest.skip("this PyAV build has no HEVC encoder")
    # x265's open GOPs put keyframes where decord's index does not expect them.
    path = write_video(tmp_path / "hevc.mp4", "libx265", gop=10, b_frames=3)
    reference = reference_decode(path)
    indices = spread_indices(len(reference))
    for backend in ("auto", "pyav", "decord"):
        got = read_frames(path, indices, backend=backend)
        assert_frames_equal(got, reference, indices, f"hevc, {backend}")


def test_probe_rescans_a_rewritten_file(tmp_path):
    path = write_video(tmp_path / "clip.mp4", "libx264", num_frames=40)
    assert probe_video(path).num_frames == 40
    write_video(path, "libx264", num_frames=24)
    assert probe_video(path).num_frames == 24
    assert index_of(read_frames(path, [23])[0]) == 23


def test_indices_shape_type_and_empty(generated):
    path = generated["h264.mp4"]
    assert read_frames(path, []).shape == (0, HEIGHT, WIDTH, 3)
    with pytest.raises(TypeError, match="integers"):
        read_frames(path, [0.5])
    with pytest.raises(ValueError, match="1-D"):
        read_frames(path, [[0, 1]])
    with pytest.raises(ValueError, match="unknown backend"):
        read_frames(path, [0], backend="opencv")


# ---------------------------------------------------------------------------------------------
# Errors a user can cause: one VideoError naming the file


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match=re.escape(str(path)) + ": no such file"):
        probe_video(path)
    with pytest.raises(VideoError, match="no such file"):
        read_frames(path, [0])


def test_empty_file_directory_and_text_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=re.escape(str(empty)) + ": empty file"):
        read_frames(empty, [0])
    with pytest.raises(VideoError, match="is a directory"):
        probe_video(tmp_path)
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(VideoError, match=re.escape(str(text)) + ": not a video file") as caught:
        read_frames(text, [0], backend="decord")
    assert isinstance(caught.value.__cause__, av.FFmpegError)


def test_index_out_of_range(generated):
    path = generated["h264.mp4"]
    for backend in ("auto", "pyav", "decord"):
        with pytest.raises(VideoError, match=re.escape(str(path)) + ".*48 decodable frames"):
            read_frames(path, [3, NUM_FRAMES], backend=backend)
    with pytest.raises(VideoError, match="frame index -1 out of range"):
        read_frames(path, [-1])


def check_truncated(path: Path) -> None:
    """The contract for a damaged file: the frames that decode, then a VideoError naming it."""
    reference = reference_decode(path)
    n = len(reference)
    if n == 0:
        with pytest.raises(VideoError, match=re.escape(str(path))):
            probe_video(path)
        with pytest.raises(VideoError, match=re.escape(str(path))):
            read_frames(path, [0])
        return
    assert probe_video(path).num_frames == n
    every = np.arange(n)
    assert_frames_equal(read_frames(path, every[::-1]), reference, every[::-1], f"{path.name}")
    assert_frames_equal(read_frames(path, every, backend="pyav"), reference, every, path.name)
    with pytest.raises(VideoError, match=re.escape(str(path)) + f".*{n} decodable frames"):
        read_frames(path, [n])


@pytest.mark.parametrize("fraction", [0.01, 0.6])
@pytest.mark.parametrize("source", REAL_PARAMS)
def test_truncated_real_video(tmp_path, source: Path, fraction: float):
    data = source.read_bytes()
    path = tmp_path / f"cut_{source.name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    check_truncated(path)
    if fraction == 0.01:  # a header's worth of bytes holds no frame
        with pytest.raises(VideoError):
            probe_video(path)


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_truncated_faststart_mp4(tmp_path, fraction: float):
    # Index at the front: the file opens, announces every frame, and the decoder fails midway.
    full = write_video(
        tmp_path / "full.mp4", "libx264", container_options={"movflags": "+faststart"}
    )
    data = full.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    check_truncated(path)
    n = probe_video(path).num_frames
    assert 0 < n < NUM_FRAMES
    assert choose_backend(path).backend == "pyav"
    with pytest.raises(VideoError, match="truncated or corrupt"):
        read_frames(path, [NUM_FRAMES - 1])


# ---------------------------------------------------------------------------------------------
# Still images


def test_png_is_a_one_frame_video(tmp_path):
    path = tmp_path / "frame.png"
    pixels = frame_for(5)
    Image.fromarray(pixels).save(path)
    assert probe_video(path) == VideoInfo(1, 0.0, HEIGHT, WIDTH, "png")
    got = read_frames(path, [0, 0], backend="decord")
    assert got.shape == (2, HEIGHT, WIDTH, 3)
    assert np.array_equal(got[1], pixels)
    assert np.array_equal(got[0], reference_decode(path)[0])  # PNG is lossless: PyAV agrees
    with pytest.raises(VideoError, match=re.escape(str(path)) + ".*1 decodable frames"):
        read_frames(path, [1])


def test_jpeg_matches_pil_and_bad_image_errors(tmp_path):
    path = tmp_path / "frame.jpg"
    Image.fromarray(frame_for(9)).save(path, quality=90)
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB"))
    assert np.array_equal(read_frames(path, [0])[0], expected)
    assert probe_video(path).codec == "jpeg"
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    with pytest.raises(VideoError, match=re.escape(str(fake)) + ": not a readable image"):
        read_frames(fake, [0])


# ---------------------------------------------------------------------------------------------
# Clip sampling


def test_clip_starts_counts_and_boundaries():
    assert clip_starts(64) == [0, 16, 32, 48]
    assert clip_starts(63) == [0, 16, 32]  # only full clips
    assert clip_starts(16) == [0]
    assert clip_starts(40, clip_len=8, stride=1, step=4) == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    with pytest.raises(VideoError, match=r"a\.mp4: video of 15 frames is shorter than one clip"):
        clip_starts(15, source="a.mp4")


def test_clip_starts_with_stride():
    num_frames, clip_len, stride = 40, 8, 2
    starts = clip_starts(num_frames, clip_len=clip_len, stride=stride, step=4)
    assert starts == [0, 4, 8, 12, 16, 20, 24]
    last = clip_frame_indices(starts[-1], clip_len, stride)
    assert last[-1] == 38 < num_frames  # the last clip fits ...
    assert (
        clip_frame_indices(starts[-1] + 4, clip_len, stride)[-1] >= num_frames
    )  # ... the next not
    with pytest.raises(VideoError, match="span 15 frames"):
        clip_starts(14, clip_len=8, stride=2)


def test_clip_frame_indices():
    indices = clip_frame_indices(5, clip_len=4, stride=3)
    assert indices.dtype == np.int64 and indices.tolist() == [5, 8, 11, 14]
    assert clip_frame_indices(0).tolist() == list(range(16))


def test_eval_clip_starts_evenly_spaced():
    starts = eval_clip_starts(100, n=5, clip_len=16)
    assert starts == [0, 21, 42, 63, 84]  # first and last full clip included
    assert eval_clip_starts(100, n=1) == [42]  # the middle clip
    assert eval_clip_starts(40, n=3, clip_len=8, stride=2) == [0, 13, 25]  # 12.5 rounds up


def test_eval_clip_starts_short_video_repeats():
    starts = eval_clip_starts(18, n=5, clip_len=16)
    assert starts == [0, 1, 1, 2, 2]
    assert eval_clip_starts(16, n=5) == [0] * 5
    with pytest.raises(VideoError, match=r"v\.mp4: video of 10 frames is shorter than one clip"):
        eval_clip_starts(10, n=5, source="v.mp4")


def test_static_frame_indices():
    assert static_frame_indices(100, 2) == [25, 75]
    assert static_frame_indices(10, 4) == [1, 3, 6, 8]
    assert static_frame_indices(7, 1) == [3]
    assert static_frame_indices(3, 5) == [0, 0, 1, 2, 2]  # more frames asked than exist
    with pytest.raises(VideoError):
        static_frame_indices(0, 2)


def test_static_clip_tiles_one_frame():
    frame = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    clip = static_clip(frame, 16)
    assert clip.shape == (16, 6, 8, 3) and clip.dtype == np.uint8
    assert all(np.array_equal(clip[t], frame) for t in range(16))
    clip[0, 0, 0, 0] ^= 0xFF
    assert clip[0, 0, 0, 0] != frame[0, 0, 0]  # a copy, not a view of the frame


# ---------------------------------------------------------------------------------------------
# Preprocessing


def test_preprocess_shape_dtype_and_normalisation():
    colour = np.array([255, 0, 128], np.uint8)
    clips = np.broadcast_to(colour, (2, 4, 48, 64, 3)).copy()
    out = preprocess_clips(clips, size=32, resize_short=40, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert out.shape == (2, 3, 4, 32, 32) and out.dtype == torch.float32
    for channel in range(3):
        expected = (colour[channel] / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        torch.testing.assert_close(
            out[:, channel], torch.full_like(out[:, channel], expected), atol=1e-5, rtol=0
        )


def test_preprocess_keeps_time_axis_in_order():
    clips = np.zeros((1, 3, 20, 20, 3), np.uint8)
    for t in range(3):
        clips[0, t] = 50 * (t + 1)
    out = preprocess_clips(clips, size=16, resize_short=None, mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (1, 3, 3, 16, 16)
    for t in range(3):
        torch.testing.assert_close(out[0, :, t], torch.full((3, 16, 16), 50 * (t + 1) / 255.0))


def test_preprocess_centre_crop_picks_the_centre():
    # Short side already equals the crop: no resize, so the crop is exactly columns 20..79.
    clips = np.random.default_rng(0).integers(0, 256, (1, 2, 60, 100, 3), dtype=np.uint8)
    out = preprocess_clips(clips, size=60, resize_short=None, mean=(0, 0, 0), std=(1, 1, 1))
    expected = torch.from_numpy(clips[:, :, :, 20:80].astype(np.float32) / 255.0)
    torch.testing.assert_close(out, expected.permute(0, 4, 1, 2, 3))
    # Tall frames crop rows; a frame black outside a centred white square keeps only white.
    tall = np.zeros((1, 1, 128, 64, 3), np.uint8)
    tall[:, :, 24:104] = 255  # wider than the crop plus the filter's reach
    out = preprocess_clips(tall, size=32, resize_short=32, mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (1, 3, 1, 32, 32)
    torch.testing.assert_close(out, torch.ones_like(out))


@pytest.mark.parametrize("shape, short", [((5, 48, 64, 3), 40), ((5, 32, 32, 3), None)])
def test_preprocess_channels_last_gives_the_same_values_laid_out_channels_last(shape, short):
    frames = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    plain = preprocess_frames(frames, 32, short, IMAGENET_MEAN, IMAGENET_STD)
    last = preprocess_frames(frames, 32, short, IMAGENET_MEAN, IMAGENET_STD, channels_last=True)
    assert plain.is_contiguous() and not last.is_contiguous()
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last)  # bit for bit: only the layout differs
    # The values of the earlier code: the frames' channels-last view resized (48x64 -> 40x53)
    # or, already 32x32, not resized, then cropped and normalised.
    view = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if short is not None:
        view = torch.nn.functional.interpolate(
            view, size=(40, 53), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    top, left = (view.shape[2] - 32) // 2, (view.shape[3] - 32) // 2
    crop = view[:, :, top : top + 32, left : left + 32]
    assert torch.equal(plain, (crop / 255.0 - mean) / std)


def test_preprocess_resizes_short_side():
    # Left half red, right half blue at 96x192 -> short side 48 -> crop 48: the boundary stays
    # in the middle of the crop.
    clips = np.zeros((1, 1, 96, 192, 3), np.uint8)
    clips[..., :96, 0] = 255
    clips[..., 96:, 2] = 255
    out = preprocess_clips(clips, size=48, resize_short=48, mean=(0, 0, 0), std=(1, 1, 1))
    red, blue = out[0, 0, 0], out[0, 2, 0]  # (48, 48)
    torch.testing.assert_close(red[:, :23], torch.ones(48, 23))
    torch.testing.assert_close(blue[:, 25:], torch.ones(48, 23))
    torch.testing.assert_close(red[:, 25:], torch.zeros(48, 23))
    with pytest.raises(ValueError, match="smaller than the crop"):
        preprocess_clips(clips, size=48, resize_short=32, mean=(0, 0, 0), std=(1, 1, 1))
