"""Decoding: exact RGB frames of a video or still image, by index.

The reading contract (DESIGN.md): for every frame index, `read_frames` returns exactly the RGB
frame that a full sequential PyAV decode of the file yields at that index,

    with av.open(path) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

and `probe_video(path).num_frames == len(reference)`. For a truncated or corrupt file the
reference is the frames that decode before the decoder gives up; asking for more is a
`VideoError` naming the file.

Two decoders can deliver frames:

- PyAV (FFmpeg 8 in its wheel) is the reference itself. It reads from frame 0 in order and
  converts only the frames asked for, so it is always exact and its cost grows with the largest
  index asked.
- decord (FFmpeg 4.1 in its wheel) seeks to keyframes, which makes a few frames late in a long
  file cheap. It is not exact everywhere. Measured on the shared real videos and on generated
  files:
    * seeking: decord maps a frame index to a timestamp through its own packet index. In AVI and
      MPEG-PS that index has no timestamps and sought frames are wrong (decord issues 195, 252;
      reproduced: an H.264-with-B-frames AVI returned frame 9 for frame 59). In an HEVC MP4 with
      open GOPs decord's keyframe list (decode order) disagrees with the decoded keyframes and
      frames 26-31 came back as 30-35. Sequential reads were right in all of these.
    * decoding: H.264, HEVC, VP8 and VP9 (bit-exact by specification) decoded identically in both
      FFmpeg versions. MPEG-4 Part 2 did not (a few pixels off by 1-2 in some frames; the same
      YUV fed to decord converts identically, so the decoders differ).
    * colour conversion: 8-bit YUV 4:2:0 / 4:2:2 / 4:4:4, limited and full range, converted to
      identical RGB. 10-bit H.264 did not (up to 43 levels off; its decoding is bit-exact, so
      this is decord's older 10-to-8-bit conversion).
    * AV1 does not open in decord at all.

`backend="auto"` therefore uses decord only on a file that passes every check below, and PyAV
otherwise: a bit-exact codec and an 8-bit pixel format from the lists above, no rotation, a clean
decode (no decoding error, no corrupt packet or frame, frame count matching the header), an
MP4/MOV/Matroska/WebM container, strictly increasing timestamps, decord's index agreeing with the
sequential decode (frame count, keyframe positions, timestamps), and decord returning the same
first frame, last frame and frame before the last keyframe as PyAV. Probe and checks run once per
file and process, cached per (path, size, mtime). Counting frames exactly takes one full decode, so
the first read of a file with "auto" or "pyav" is served by that PyAV pass; decord is checked
within its first read after that. `backend="decord"` forces decord, reading from frame 0 in order
wherever its index disagrees (so never a wrongly sought frame), and warns where its decoding is
known to differ. Still images (PNG, JPEG, BMP) are one-frame videos read with PIL
(`Image.convert("RGB")`) by every backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from common.errors import LatentveilError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
# Files read as one-frame videos with PIL (by suffix, lower case); also what feature
# extraction lists as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# Codecs whose decoding is bit-exact by specification, so decord's FFmpeg 4.1 and PyAV's FFmpeg 8
# produce the same YUV (measured for all four; MPEG-4 Part 2 measurably differs).
_BITEXACT_CODECS = frozenset({"h264", "hevc", "vp8", "vp9"})
# 8-bit formats whose YUV -> rgb24 conversion was measured identical in both FFmpeg versions.
_EXACT_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
# Demuxers that store per-frame timestamps in an index, which decord's seeking relies on.
_SEEKABLE_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm"})
# decord timestamps are float32 seconds; a tenth of a millisecond is far below any frame spacing.
_TIME_TOLERANCE_S = 1e-4
# A header may round the duration; more than this many frames short means frames are missing.
_DURATION_SLACK_FRAMES = 2.0
# Frames per decord call when reading in order: bounds memory, and consecutive calls never seek.
_SEQUENTIAL_CHUNK = 16
_CACHE_SIZE = 1024
# decord prefixes its errors with "[12:34:56] /path/to/source.cc:123: ".
_DECORD_LOG_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


class VideoError(LatentveilError):
    """A video or image that cannot be read as asked; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What a full sequential decode of a file yields.

    `num_frames` counts decoded frames, not the header's claim; `fps` is the stream's average
    rate (0.0 when unknown, e.g. still images); `codec` is FFmpeg's codec name ("h264",
    "mpeg4", "av1") or the image format ("png", "jpeg", "bmp"). `damage` says why the file
    looks truncated or corrupt (its frames are those that decode before that), None if clean.
    """

    num_frames: int
    fps: float
    height: int
    width: int
    codec: str
    damage: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BackendChoice:
    """The decoder `backend="auto"` uses for a file and why."""

    backend: str  # "decord" | "pyav" | "pil"
    reason: str


@dataclass(frozen=True, eq=False)
class _Scan:
    """Facts from one sequential PyAV decode of a file, kept to decide whether decord is safe."""

    info: VideoInfo
    is_image: bool
    container: str = ""  # FFmpeg demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    pix_fmt: str = ""
    rotation: int = 0
    damage: str | None = None  # why the file looks truncated or corrupt; None if clean
    times: np.ndarray | None = None  # (num_frames,) seconds; None if a frame had no timestamp
    keyframes: tuple[int, ...] = ()
    check_digests: tuple[tuple[int, bytes], ...] = ()  # (frame index, digest of its rgb24)


_CacheKey = tuple[str, int, int]
_scan_cache: OrderedDict[_CacheKey, _Scan] = OrderedDict()
_verdict_cache: OrderedDict[_CacheKey, tuple[bool, str]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_video_cache() -> None:
    """Forget every cached probe and decord verdict (files are re-checked on next use)."""
    with _cache_lock:
        _scan_cache.clear()
        _verdict_cache.clear()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Return frame count, rate, size and codec of a video or still image.

    The frame count comes from one full sequential decode (headers are wrong on some files,
    e.g. truncated ones), cached per (path, size, mtime) for the life of the process.
    Raises VideoError naming the file if it is missing, empty, not a video or has no frames.
    """
    return _probe(path)[1].info


def choose_backend(path: str | os.PathLike) -> BackendChoice:
    """Say which decoder `read_frames(path, ..., backend="auto")` uses, and why.

    Runs (and caches) the checks described in the module docstring, including opening the file
    with decord and comparing three frames with PyAV's.
    """
    key, scan = _probe(path)
    if scan.is_image:
        return BackendChoice("pil", "still image")
    use_decord, reason = _decord_verdict(os.fspath(path), key, scan)
    return BackendChoice("decord" if use_decord else "pyav", reason)


def read_frames(
    path: str | os.PathLike, indices: Sequence[int] | np.ndarray, backend: str = "auto"
) -> np.ndarray:
    """Return the RGB frames at `indices` (any order, repeats allowed) as uint8 (N, H, W, 3).

    Every frame equals the one a full sequential PyAV decode yields at that index (see the
    module docstring for what `backend="decord"` does and does not promise). Pass all the
    indices needed from one file in one call: each call decodes from the start (PyAV) or from
    keyframes (decord). The first call on a file decodes all of it once (to count its frames).
    Raises VideoError naming the file for an unreadable file or an index outside
    [0, num_frames).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    name = os.fspath(path)
    wanted = _as_index_array(indices)  # (N,)
    key = _cache_key(name)
    with _cache_lock:
        scan = _scan_cache.get(key)

    uniq, inverse = np.unique(wanted, return_inverse=True)  # (U,), (N,)
    if scan is None and backend != "decord" and Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        # The first read of a file must decode all of it anyway to count its frames, so that
        # pass collects the frames asked for: one decode instead of a probe plus a read.
        scan, frames = _scan_video(name, uniq)
        _remember(_scan_cache, key, scan)
        _check_range(name, wanted, scan)
        return _in_asked_order(frames, wanted, uniq, inverse)
    if scan is None:
        key, scan = _probe(name)

    _check_range(name, wanted, scan)
    if scan.is_image:
        return np.repeat(_load_image(name)[0][None], len(wanted), axis=0)  # (N, H, W, 3)
    if len(wanted) == 0:
        return np.empty((0, scan.info.height, scan.info.width, 3), np.uint8)

    if backend == "pyav":
        frames = _read_pyav(name, uniq, scan)
    elif backend == "decord":
        frames = _read_decord_forced(name, scan, uniq)
    else:
        frames = _read_auto(name, key, scan, uniq)
    return _in_asked_order(frames, wanted, uniq, inverse)


def _read_auto(name: str, key: _CacheKey, scan: _Scan, uniq: np.ndarray) -> np.ndarray:
    """Ascending unique frames `uniq` with decord where it is verified exact, else PyAV."""
    with _cache_lock:
        verdict = _verdict_cache.get(key)
    if verdict is None:
        # First decord read of this file: check it and read the frames in the same pass.
        verdict, frames = _judge_decord(name, scan, uniq)
        _remember(_verdict_cache, key, verdict)
        if frames is not None:
            return frames
    elif verdict[0]:
        try:
            return _read_decord(_open_decord(name), uniq, seek=True)
        except Exception as exc:  # decord passed its checks; any later failure falls back
            logger.warning("%s: decord failed (%s); reading with PyAV", name, _first_line(exc))
            _remember(_verdict_cache, key, (False, f"decord failed: {_first_line(exc)}"))
    return _read_pyav(name, uniq, scan)


def _in_asked_order(
    frames: np.ndarray, wanted: np.ndarray, uniq: np.ndarray, inverse: np.ndarray
) -> np.ndarray:
    """(U, H, W, 3) frames of the ascending unique indices -> (N, H, W, 3) in the asked order."""
    if len(uniq) == len(wanted) and np.array_equal(uniq, wanted):
        return frames  # asked ascending without repeats: skip a copy of every frame
    return frames[inverse]


# ---------------------------------------------------------------------------------------------
# Probing


def _cache_key(name: str) -> _CacheKey:
    """Stat the file; the key changes whenever the file is rewritten."""
    path = Path(name)
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise VideoError(f"{name}: no such file") from exc
    except OSError as exc:
        raise VideoError(f"{name}: cannot access the file ({exc.strerror})") from exc
    if path.is_dir():
        raise VideoError(f"{name}: is a directory, not a video file")
    if stat.st_size == 0:
        raise VideoError(f"{name}: empty file (0 bytes), not a video")
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _probe(path: str | os.PathLike) -> tuple[_CacheKey, _Scan]:
    """Return the cached scan of a file, scanning it on first use."""
    name = os.fspath(path)
    key = _cache_key(name)
    with _cache_lock:
        scan = _scan_cache.get(key)
    if scan is None:
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            image, fmt = _load_image(name)  # (H, W, 3), e.g. "png"
            info = VideoInfo(1, 0.0, image.shape[0], image.shape[1], fmt)
            scan = _Scan(info=info, is_image=True)
        else:
            scan, _ = _scan_video(name, None)
        _remember(_scan_cache, key, scan)
    return key, scan


def _remember(cache: OrderedDict, key: _CacheKey, value: Any) -> None:
    with _cache_lock:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


def _open_container(name: str) -> Any:
    try:
        return av.open(name)
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise VideoError(f"{name}: not a video file FFmpeg can read ({exc})") from exc


def _video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        raise VideoError(f"{name}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoError(f"{name}: unsupported video codec (no decoder in this FFmpeg build)")
    return stream


def _frame_digest(rgb: np.ndarray) -> bytes:
    """Digest of an rgb24 frame and its shape (a transposed frame has the same bytes count)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.digest()


def _scan_video(name: str, uniq: np.ndarray | None) -> tuple[_Scan, np.ndarray]:
    """Decode the whole file once in order, as the reference does; return the frames `uniq`.

    `uniq` holds ascending unique indices; the frames come back as (U, H, W, 3), rows of
    indices past the end left unfilled (the caller rejects those indices).

    The loop is `container.decode(video=0)` spelled out (PyAV implements it as exactly this), so
    the frame count and frames match the reference, including where decoding stops on an error.
    """
    slot = {} if uniq is None else {int(index): row for row, index in enumerate(uniq)}
    frames = np.empty((0, 0, 0, 3), np.uint8)
    container = _open_container(name)
    with container:
        stream = _video_stream(container, name)
        codec = stream.codec_context.codec.canonical_name
        num = 0
        size: tuple[int, int] | None = None
        rotation = 0
        pix_fmts: set[str] = set()
        times: list[float] = []
        timestamps_complete = True
        keyframes: list[int] = []
        corrupt = False
        error: Exception | None = None
        digests: dict[int, bytes] = {}
        previous = last = None
        before_last_key: tuple[int, Any] | None = None
        try:
            for packet in container.demux(stream):
                corrupt |= packet.is_corrupt
                for frame in packet.decode():
                    if size is None:
                        size = (frame.height, frame.width)
                        rotation = int(frame.rotation or 0)
                        frames = np.empty((len(slot), *size, 3), np.uint8)  # (U, H, W, 3)
                    elif (frame.height, frame.width) != size:
                        raise VideoError(
                            f"{name}: frame size changes mid-stream at frame {num} "
                            f"({size[1]}x{size[0]} -> {frame.width}x{frame.height}); unsupported"
                        )
                    pix_fmts.add(frame.format.name)
                    corrupt |= frame.is_corrupt
                    if frame.time is None:
                        timestamps_complete = False
                    else:
                        times.append(frame.time)
                    if frame.key_frame:
                        keyframes.append(num)
                        if num > 0:
                            before_last_key = (num - 1, previous)
                    if num == 0:
                        digests[0] = _frame_digest(frame.to_ndarray(format="rgb24"))
                    if num in slot:
                        frames[slot[num]] = frame.to_ndarray(format="rgb24")
                    previous = last = frame
                    num += 1
        except av.FFmpegError as exc:
            # The reference decode raises here too: the frames so far are all it yields.
            error = exc
        except ValueError as exc:  # to_ndarray: a pixel format swscale cannot make rgb24 of
            raise VideoError(f"{name}: cannot convert its frames to RGB ({exc})") from exc

        if num == 0:
            detail = f" ({error})" if error is not None else ""
            raise VideoError(f"{name}: contains no decodable video frames{detail}")
        # Frames at the end of a GOP and the last frame are where a wrong seek or a different
        # error concealment would show; keep their digests to check decord against.
        for index, frame in ((num - 1, last), before_last_key or (0, None)):
            if frame is not None and index not in digests:
                digests[index] = _frame_digest(frame.to_ndarray(format="rgb24"))

        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        damage = _damage(container, stream, num, fps, corrupt, error)
        assert size is not None
        info = VideoInfo(num, fps, size[0], size[1], codec, damage)
        scan = _Scan(
            info=info,
            is_image=False,
            container=container.format.name,
            pix_fmt=",".join(sorted(pix_fmts)),
            rotation=rotation,
            damage=damage,
            times=np.asarray(times, np.float64) if timestamps_complete else None,
            keyframes=tuple(keyframes),
            check_digests=tuple(sorted(digests.items())),
        )
    return scan, frames


def _damage(
    container: Any, stream: Any, num: int, fps: float, corrupt: bool, error: Exception | None
) -> str | None:
    """Why a decoded file looks truncated or corrupt, or None if nothing suggests it."""
    if error is not None:
        return f"decoding stopped with an error after {num} frames ({error})"
    if corrupt:
        return "it has corrupt (truncated or damaged) packets or frames"
    if stream.frames and stream.frames != num:
        return f"its header announces {stream.frames} frames but {num} decode"
    # The header duration counts every stream, so it only speaks for video in a video-only file.
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif len(container.streams) == 1 and container.duration:
        duration = container.duration / av.time_base
    if duration and fps and duration * fps > num + _DURATION_SLACK_FRAMES:
        return (
            f"its header announces {duration:.2f} s (~{duration * fps:.0f} frames) but {num} decode"
        )
    return None


def _load_image(name: str) -> tuple[np.ndarray, str]:
    """Decode a still image with PIL: uint8 (H, W, 3) RGB and its format ("png", "jpeg", ...)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(name) as image:
            fmt = (image.format or "image").lower()
            return np.asarray(image.convert("RGB")), fmt
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VideoError(f"{name}: not a readable image ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Index handling


def _as_index_array(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(
            f"indices must be a 1-D sequence of frame numbers, got shape {array.shape}"
        )
    if array.size == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_range(name: str, wanted: np.ndarray, scan: _Scan) -> None:
    num = scan.info.num_frames
    bad = wanted[(wanted < 0) | (wanted >= num)]
    if bad.size:
        hint = f"; the file looks truncated or corrupt: {scan.damage}" if scan.damage else ""
        raise VideoError(
            f"{name}: frame index {int(bad[0])} out of range: the file has {num} decodable "
            f"frames (valid indices 0..{num - 1}){hint}"
        )


# ---------------------------------------------------------------------------------------------
# PyAV


def _read_pyav(name: str, uniq: np.ndarray, scan: _Scan) -> np.ndarray:
    """Decode from frame 0 up to uniq[-1] in order, converting only the frames in `uniq`."""
    info = scan.info
    out = np.empty((len(uniq), info.height, info.width, 3), np.uint8)  # (U, H, W, 3)
    slot = {int(index): position for position, index in enumerate(uniq)}
    last = int(uniq[-1])
    num = 0
    container = _open_container(name)
    with container:
        stream = _video_stream(container, name)
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if num in slot:
                        out[slot[num]] = frame.to_ndarray(format="rgb24")
                    num += 1
                    if num > last:
                        return out
        except av.FFmpegError as exc:
            raise VideoError(
                f"{name}: decoding failed at frame {num} ({exc}); the file changed or is damaged"
            ) from exc
    raise VideoError(f"{name}: only {num} frames decoded now, {info.num_frames} earlier; changed?")


# ---------------------------------------------------------------------------------------------
# decord


def _first_line(exc: BaseException) -> str:
    """The informative part of a (decord) error: first line, minus decord's time/source prefix."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return _DECORD_LOG_PREFIX.sub("", text.splitlines()[0])[:200]


def _open_decord(name: str) -> Any:
    import decord

    # decord's FFmpeg logs every decoding hiccup of a damaged file to stderr; what matters
    # reaches the caller as a VideoError or a fallback to PyAV instead.
    decord.logging.set_level(decord.logging.QUIET)
    # One decoding thread per reader: parallelism comes from data-loader workers, and decord's
    # output does not depend on it.
    return decord.VideoReader(name, ctx=decord.cpu(0), num_threads=1)


def _to_numpy(batch: Any) -> np.ndarray:
    # decord returns its own NDArray, or a framework tensor if someone set a global bridge.
    return np.asarray(batch.asnumpy() if hasattr(batch, "asnumpy") else batch.numpy())


def _static_problem(scan: _Scan) -> str | None:
    """Why decord's decode of this file can differ from PyAV's, judged from the scan alone."""
    if scan.info.codec not in _BITEXACT_CODECS:
        return (
            f"codec {scan.info.codec} is not decoded bit-identically by decord's FFmpeg 4.1 "
            f"(exact only for {', '.join(sorted(_BITEXACT_CODECS))})"
        )
    if scan.pix_fmt not in _EXACT_PIX_FMTS:
        return f"pixel format {scan.pix_fmt} converts to RGB differently in decord"
    if scan.rotation:
        return f"rotated stream ({scan.rotation} deg): decord rotates, the reference does not"
    if scan.damage:
        return f"the file looks truncated or corrupt: {scan.damage}"
    return None


def _index_problem(vr: Any, scan: _Scan) -> str | None:
    """Why decord's frame index disagrees with the sequential decode, or None if it agrees."""
    num = scan.info.num_frames
    if len(vr) != num:
        return f"decord counts {len(vr)} frames, a sequential decode yields {num}"
    if not any(part in _SEEKABLE_CONTAINERS for part in scan.container.split(",")):
        return f"{scan.container} container: decord's seeking is unreliable there (issues 195, 252)"
    if scan.times is None or np.any(np.diff(scan.times) <= 0):
        return "frame timestamps are missing or not increasing"
    if tuple(int(k) for k in vr.get_key_indices()) != scan.keyframes:
        return "decord's keyframe positions differ from the decoded keyframes"
    starts = np.asarray(vr.get_frame_timestamp(list(range(num))), np.float64)[:, 0]  # (num,)
    if np.max(np.abs(starts - scan.times)) > _TIME_TOLERANCE_S:
        return "decord's frame timestamps differ from the decoded ones"
    return None


def _decord_verdict(name: str, key: _CacheKey, scan: _Scan) -> tuple[bool, str]:
    """Whether `auto` may read this file with decord (seeking), with the reason; cached."""
    with _cache_lock:
        cached = _verdict_cache.get(key)
    if cached is None:
        cached, _ = _judge_decord(name, scan, None)
        _remember(_verdict_cache, key, cached)
    return cached


def _judge_decord(
    name: str, scan: _Scan, uniq: np.ndarray | None
) -> tuple[tuple[bool, str], np.ndarray | None]:
    """Check decord on this file; if it passes, also return the ascending frames `uniq`.

    The check frames are read in the same ascending (forward-seeking) batch as the frames
    asked for, the way every later read happens, so a file read whole costs no extra decoding.
    """
    problem = _static_problem(scan)
    if problem:
        return (False, problem), None
    checks = dict(scan.check_digests)
    asked = [] if uniq is None else uniq.tolist()
    batch_indices = sorted(set(asked) | set(checks))
    try:
        vr = _open_decord(name)
        problem = _index_problem(vr, scan)
        if problem:
            return (False, problem), None
        batch = _to_numpy(vr.get_batch(batch_indices))  # (B, H, W, 3)
    except ImportError as exc:
        return (False, f"decord is not installed ({exc})"), None
    except Exception as exc:  # decord raises its own error types for unreadable files
        return (False, f"decord cannot read it ({_first_line(exc)})"), None
    position = {index: row for row, index in enumerate(batch_indices)}
    for index, digest in checks.items():
        if _frame_digest(batch[position[index]]) != digest:
            verdict = (False, f"decord's frame {index} differs from the sequential PyAV decode")
            logger.info("%s: %s; reading with PyAV", name, verdict[1])
            return verdict, None
    verdict = (True, "decord's index and sampled frames match the sequential PyAV decode")
    if len(batch_indices) == len(asked):
        return verdict, batch  # the check frames were among those asked
    return verdict, batch[[position[index] for index in asked]]  # (U, H, W, 3)


def _read_decord(vr: Any, uniq: np.ndarray, seek: bool) -> np.ndarray:
    """Read the ascending unique frames `uniq` from a fresh decord reader, seeking or in order."""
    if seek:
        return _to_numpy(vr.get_batch(uniq.tolist()))  # (U, H, W, 3)
    # Consecutive chunks from frame 0: decord only seeks when asked for a frame other than the
    # next one, so this never seeks.
    slot = {int(index): position for position, index in enumerate(uniq)}
    out: np.ndarray | None = None
    last = int(uniq[-1])
    for start in range(0, last + 1, _SEQUENTIAL_CHUNK):
        chunk = list(range(start, min(start + _SEQUENTIAL_CHUNK, last + 1)))
        batch = _to_numpy(vr.get_batch(chunk))  # (chunk, H, W, 3)
        if out is None:
            out = np.empty((len(uniq), *batch.shape[1:]), np.uint8)  # (U, H, W, 3)
        for offset, index in enumerate(chunk):
            if index in slot:
                out[slot[index]] = batch[offset]
    assert out is not None
    return out


def _read_decord_forced(name: str, scan: _Scan, uniq: np.ndarray) -> np.ndarray:
    """backend="decord": decord's frames, never wrongly sought, with a warning where inexact."""
    problem = _static_problem(scan)
    if problem:
        warnings.warn(
            f"{name}: decord's frames may differ from the reference decode: {problem}; "
            "use backend='auto' or 'pyav' for exact frames",
            stacklevel=3,
        )
    try:
        vr = _open_decord(name)
        if len(vr) != scan.info.num_frames:
            raise VideoError(
                f"{name}: decord counts {len(vr)} frames but a sequential decode yields "
                f"{scan.info.num_frames}, so decord's frame numbers cannot be trusted; "
                "use backend='auto' or 'pyav'"
            )
        index_problem = _index_problem(vr, scan)
        if index_problem:
            logger.debug("%s: decord reads in order: %s", name, index_problem)
        return _read_decord(vr, uniq, seek=index_problem is None)
    except (VideoError, ImportError):
        raise
    except Exception as exc:  # decord raises its own error types for unreadable files
        raise VideoError(f"{name}: decord cannot read it ({_first_line(exc)})") from exc
