"""The HDF5 feature store: each video encoded once by the frozen encoder, cached for training.

Layout of a store (schema version 1):

    /                    attrs: schema_version, encoder_id, dim, clip_len, clip_stride,
                                clip_step, static_clips, eval_clips, frame_size, dtype
    /videos/<video_id>/  clip_features       (N_clips, d)  non-overlapping clips, in order
                         eval_clip_features  (E, d)        evenly spaced evaluation clips
                         static_features     (K, d)        static clips of K evenly spaced frames
                         attrs: source_size, source_sha256, num_frames

Labels stay in the manifests, joined by video id. Still images (the privacy set) have no
clips: their clip arrays are empty and their one frame gives one static clip.

Writes are atomic and resumable. `extract_features` encodes fixed chunks of videos into shard
files beside the target (`FEATS.h5.parts/`), each written to a temporary name and renamed, then
merges store and shards into a temporary file renamed over the target. Killed half-way and run
again, it keeps the finished shards, encodes the rest in the same chunks and batches, and the
result equals an uninterrupted run. Appending to a store made by another encoder is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from common.atomic import atomic_path, file_sha256, output_file
from common.config import FeaturesConfig
from common.errors import LatentveilError
from common.video import (
    IMAGE_SUFFIXES,
    VideoError,
    clip_frame_indices,
    clip_starts,
    eval_clip_starts,
    preprocess_frames,
    probe_video,
    read_frames,
    static_frame_indices,
)

SCHEMA_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
# Videos per shard: the unit of resumption (a kill loses at most one shard of work).
SHARD_VIDEOS = 64
# Threads decoding ahead of the encoder.
DECODE_WORKERS = 2


# Maps a video's encoded array (its name, the array) to what the store keeps.
FeatureTransform = Callable[[str, np.ndarray], np.ndarray]


class FeatureStoreError(LatentveilError):
    """A feature store that is missing, malformed, or made with other settings."""


@dataclass(frozen=True)
class VideoItem:
    """A video (or still image) to encode, under the id its manifest uses."""

    video_id: str
    path: Path


@dataclass(frozen=True)
class StoreSettings:
    """What a store's features depend on; every part of a store must agree on all of it."""

    encoder_id: str
    dim: int
    clip_len: int
    clip_stride: int
    clip_step: int
    static_clips: int
    eval_clips: int
    frame_size: int
    dtype: str
    # What wrote the clip features: the encoder's backend (edge_export), and the hash of the
    # adapter that anonymized them ("" = raw features). Stores older than these read as
    # "torch" and "".
    backend: str = "torch"
    anonymized: str = ""

    def as_attrs(self) -> dict[str, object]:
        return {"schema_version": SCHEMA_VERSION, **self.__dict__}

    @classmethod
    def from_attrs(cls, attrs: h5py.AttributeManager, path: Path) -> StoreSettings:
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise FeatureStoreError(
                f"{path}: feature store schema version {version!r}; "
                f"this latentveil reads version {SCHEMA_VERSION}"
            )
        optional = {"backend", "anonymized"}
        try:
            values = {
                name: attrs[name]
                for name in cls.__dataclass_fields__
                if name in attrs or name not in optional
            }
        except KeyError as error:
            raise FeatureStoreError(f"{path}: feature store lacks attribute {error}") from error
        return cls(**{k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()})

    def check_same(self, other: StoreSettings, path: Path) -> None:
        """Refuse to mix features made by another encoder or with other clip settings."""
        if self.encoder_id != other.encoder_id:
            raise FeatureStoreError(
                f"{path} holds features of encoder '{other.encoder_id}', not '{self.encoder_id}': "
                "write to a new store (features of two encoders cannot be mixed)"
            )
        if self != other:
            diffs = [
                f"{name} {getattr(other, name)!r} != {getattr(self, name)!r}"
                for name in self.__dataclass_fields__
                if getattr(self, name) != getattr(other, name)
            ]
            raise FeatureStoreError(f"{path} was made with other settings: {', '.join(diffs)}")


def store_settings(
    encoder: torch.nn.Module,
    config: FeaturesConfig,
    anonymized: str = "",
    static_clips: int | None = None,
) -> StoreSettings:
    """The settings a store made by `encoder` with `config` records (`anonymized`: the hash of
    the adapter applied to the clip features, "" for raw features; `static_clips`: static clips
    per video, `config.static_clips` if None)."""
    if config.dtype not in ("float16", "float32"):
        raise FeatureStoreError(f"features.dtype must be float16 or float32, not '{config.dtype}'")
    return StoreSettings(
        encoder_id=encoder.encoder_id,
        dim=int(encoder.dim),
        clip_len=int(encoder.clip_len),
        clip_stride=config.clip_stride,
        clip_step=config.clip_step,
        static_clips=config.static_clips if static_clips is None else static_clips,
        eval_clips=config.eval_clips,
        frame_size=int(encoder.frame_size),
        dtype=config.dtype,
        backend=str(getattr(encoder, "backend", "torch")),
        anonymized=anonymized,
    )


# ---------------------------------------------------------------------------------------------
# Reading


class FeatureStore:
    """Read access to a feature store. Use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatureStoreError(f"feature store not found: {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise FeatureStoreError(
                f"{self.path} is not a readable HDF5 feature store: {error}"
            ) from error
        self.settings = StoreSettings.from_attrs(self._file.attrs, self.path)

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._file["videos"]

    def __len__(self) -> int:
        return len(self._file["videos"])

    def video_ids(self) -> list[str]:
        """Video ids in the store, sorted."""
        return sorted(self._file["videos"])

    def _array(self, video_id: str, name: str) -> np.ndarray:
        if video_id not in self:
            raise FeatureStoreError(f"{self.path} has no features for video '{video_id}'")
        return self._file["videos"][video_id][name][()].astype(np.float32)

    def clip_features(self, video_id: str) -> np.ndarray:
        """(N_clips, d) features of the video's non-overlapping clips, float32."""
        return self._array(video_id, "clip_features")

    def eval_clip_features(self, video_id: str) -> np.ndarray:
        """(E, d) features of the video's evenly spaced evaluation clips, float32."""
        return self._array(video_id, "eval_clip_features")

    def static_features(self, video_id: str) -> np.ndarray:
        """(K, d) features of the video's static clips, float32."""
        return self._array(video_id, "static_features")

    def source(self, video_id: str) -> dict[str, object]:
        """Size, SHA-256 and frame count of the source file the features came from."""
        attrs = self._file["videos"][video_id].attrs
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}


# ---------------------------------------------------------------------------------------------
# Writing


def _write_video(
    group: h5py.Group, arrays: dict[str, np.ndarray], source: dict, dtype: str
) -> None:
    for name, array in arrays.items():
        group.create_dataset(name, data=array.astype(dtype))
    for key, value in source.items():
        group.attrs[key] = value


def _copy_videos(source: h5py.File, target: h5py.File, video_ids: Sequence[str]) -> None:
    for video_id in video_ids:
        source.copy(source["videos"][video_id], target["videos"], name=video_id)


def _open_settings(path: Path) -> tuple[StoreSettings, list[str]]:
    with FeatureStore(path) as store:
        return store.settings, store.video_ids()


def _encode_items(
    items: Sequence[VideoItem],
    encoder: torch.nn.Module,
    settings: StoreSettings,
    batch_size: int,
    on_error: str,
    skipped: list[tuple[str, str]],
    advance: Callable[[int], None],
    transform: FeatureTransform | None = None,
    allow_partial: bool = False,
) -> Iterator[tuple[VideoItem, dict[str, np.ndarray], dict[str, object]]]:
    """Decode and encode videos in order, batching clips across videos; yields per video,
    after `transform` (e.g. the anonymizer) of each of its arrays."""
    pending: list[tuple[VideoItem, dict[str, np.ndarray], dict[str, object]]] = []
    # Each clip: a video's preprocessed frames (F, S, S, 3) and the T frame positions it uses.
    # Channels last: a batch of them is (B, T, S, S, 3) in memory, the channels-last layout
    # tiny3d convolves (`channels_last_input`), so that encoder does not copy it again.
    clips: list[tuple[torch.Tensor, torch.Tensor]] = []
    prep = (encoder.frame_size, encoder.resize_short, encoder.mean, encoder.std)

    def flush() -> Iterator[tuple[VideoItem, dict[str, np.ndarray], dict[str, object]]]:
        outputs = []
        for start in range(0, len(clips), batch_size):
            batch = torch.stack(
                [frames[index] for frames, index in clips[start : start + batch_size]]
            ).permute(0, 4, 1, 2, 3)  # (B, 3, T, S, S), channels-last in memory
            if not getattr(encoder, "channels_last_input", False):
                batch = batch.contiguous()  # e.g. a `module` encoder that views its input
            with torch.no_grad():
                outputs.append(encoder(batch).float().numpy())  # (B, d)
        features = np.concatenate(outputs) if outputs else np.zeros((0, settings.dim), np.float32)
        for item, selections, source in pending:
            arrays = {name: features[rows] for name, rows in selections.items()}
            if transform is not None:
                arrays = {name: transform(name, array) for name, array in arrays.items()}
            yield item, arrays, source
        pending.clear()
        clips.clear()

    for item, decoded in _decode_ahead(items, settings, prep, allow_partial):
        try:
            source, video_clips, slots, (n, e, k) = decoded.result()
        except VideoError as error:
            if on_error == "raise":
                raise
            skipped.append((item.video_id, str(error)))
            advance(1)
            continue
        rows = len(clips) + np.asarray(slots, dtype=np.int64)  # feature row of each logical clip
        selections = {
            "clip_features": rows[:n],
            "eval_clip_features": rows[n : n + e],
            "static_features": rows[n + e : n + e + k],
        }
        clips.extend(video_clips)
        pending.append((item, selections, source))
        if len(clips) >= batch_size:
            count = len(pending)
            yield from flush()
            advance(count)
    count = len(pending)
    yield from flush()
    advance(count)


def _decode_ahead(
    items: Sequence[VideoItem],
    settings: StoreSettings,
    prep: tuple,
    allow_partial: bool,
    workers: int = DECODE_WORKERS,
) -> Iterator[tuple[VideoItem, Future]]:
    """Decode videos in background threads a few items ahead, yielding them in input order.

    The decoders (FFmpeg under decord and PyAV) release the GIL, so decoding the next videos
    overlaps with encoding the current batch. Results (or errors) come back through futures.
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        queue: deque[tuple[VideoItem, Future]] = deque()
        upcoming = iter(items)
        for item in upcoming:
            queue.append((item, pool.submit(_cut_clips, item.path, settings, prep, allow_partial)))
            if len(queue) >= 4 * workers:
                yield queue.popleft()
        while queue:
            yield queue.popleft()
    finally:
        # On an error or Ctrl-C, drop the videos queued ahead instead of decoding them first.
        pool.shutdown(wait=False, cancel_futures=True)


def _cut_clips(
    path: Path, settings: StoreSettings, prep: tuple, allow_partial: bool = False
) -> tuple[dict, list[tuple[torch.Tensor, torch.Tensor]], list[int], tuple[int, int, int]]:
    """Decode and preprocess what a video needs: its clips, evaluation clips, static clips.

    `prep` is (size, resize_short, mean, std) of the encoder. Every needed frame is decoded and
    preprocessed once, and a clip needed twice (an evaluation clip that is also one of the
    non-overlapping clips) is encoded once. A clip is the frames tensor with the positions of
    its T frames (a static clip repeats one position). Returns the source description, the
    distinct clips, for each logical clip (clips, then evaluation clips, then static clips) the
    position of its distinct clip, and the three counts. A video that looks truncated or damaged
    is a VideoError unless `allow_partial` (then the frames that decode are used).
    """
    info = probe_video(path)
    if info.damage and not allow_partial:
        raise VideoError(
            f"{path}: {info.damage}; it looks truncated or damaged (allow partial videos, "
            f"--allow-partial, to encode the {info.num_frames} frames that decode)"
        )
    source = {
        "source_size": path.stat().st_size,
        "source_sha256": file_sha256(path),
        "num_frames": info.num_frames,
    }
    if path.suffix.lower() in IMAGE_SUFFIXES:
        frames = preprocess_frames(read_frames(path, [0]), *prep, channels_last=True)
        static = (frames.permute(0, 2, 3, 1), torch.zeros(settings.clip_len, dtype=torch.long))
        return source, [static], [0], (0, 0, 1)

    starts = clip_starts(
        info.num_frames, settings.clip_len, settings.clip_stride, settings.clip_step, str(path)
    )
    eval_starts = (
        eval_clip_starts(
            info.num_frames, settings.eval_clips, settings.clip_len, settings.clip_stride
        )
        if settings.eval_clips > 0
        else []
    )
    static_indices = (
        static_frame_indices(info.num_frames, settings.static_clips)
        if settings.static_clips > 0
        else []
    )
    logical = [
        clip_frame_indices(s, settings.clip_len, settings.clip_stride) for s in starts + eval_starts
    ]
    logical += [np.full(settings.clip_len, i, dtype=np.int64) for i in static_indices]
    distinct: dict[tuple[int, ...], int] = {}
    slots = [distinct.setdefault(tuple(idx.tolist()), len(distinct)) for idx in logical]
    wanted = np.unique(np.concatenate(logical))
    frames = preprocess_frames(read_frames(path, wanted.tolist()), *prep, channels_last=True)
    frames = frames.permute(0, 2, 3, 1)  # (F, S, S, 3), contiguous
    clips = [(frames, torch.from_numpy(np.searchsorted(wanted, np.array(k)))) for k in distinct]
    return source, clips, slots, (len(starts), len(eval_starts), len(static_indices))


def _write_shard(
    shard_path: Path,
    items: Sequence[VideoItem],
    encoder: torch.nn.Module,
    settings: StoreSettings,
    batch_size: int,
    on_error: str,
    skipped: list[tuple[str, str]],
    advance: Callable[[int], None],
    transform: FeatureTransform | None = None,
    allow_partial: bool = False,
) -> None:
    shard_skipped: list[tuple[str, str]] = []
    with atomic_path(shard_path, suffix=".h5") as tmp, h5py.File(tmp, "w") as shard:
        shard.attrs.update(settings.as_attrs())
        videos = shard.create_group("videos")
        for item, arrays, source in _encode_items(
            items,
            encoder,
            settings,
            batch_size,
            on_error,
            shard_skipped,
            advance,
            transform,
            allow_partial,
        ):
            _write_video(videos.create_group(item.video_id), arrays, source, settings.dtype)
        shard.attrs["skipped"] = json.dumps(shard_skipped)
    skipped.extend(shard_skipped)


def extract_features(
    items: Sequence[VideoItem],
    encoder: torch.nn.Module,
    out_path: str | Path,
    config: FeaturesConfig,
    progress: bool = True,
    on_error: str = "raise",
    transform: FeatureTransform | None = None,
    anonymized: str = "",
    allow_partial: bool = False,
    static_clips: int | None = None,
) -> list[tuple[str, str]]:
    """Encode `items` into the store at `out_path`, resuming and appending as the module says.

    Videos already in the store with the same source hash are not encoded again. With
    on_error="skip", a video that cannot be decoded is left out and reported; the returned list
    holds (video_id, reason) of each skipped video. When every video to encode is skipped, the
    store is left as it was (or not created). A truncated or damaged video (frames missing
    against its header, a decoding error, corrupt packets) counts as one that cannot be decoded
    unless `allow_partial`.

    `transform(name, array)` maps each video's encoded arrays (`clip_features` (n, d),
    `static_features` (K, d), ...) before they are written, e.g. the anonymizer of
    `edge_export`; `anonymized` is then the adapter's hash, recorded in the store.

    `static_clips` overrides `config.static_clips` for the videos (0: none; a still image keeps
    its one static clip), e.g. for a store whose videos are only read as clip sequences; it is
    then the least a store needs: an existing store that holds more is appended to with its own
    count (one that holds fewer is refused, as any other difference of settings).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    out_path = output_file(out_path)  # a folder or an unwritable place: said before encoding
    if static_clips is not None and static_clips < 0:
        raise ValueError(f"static_clips must be >= 0, got {static_clips}")
    settings = store_settings(encoder, config, anonymized, static_clips)
    first: dict[str, Path] = {}
    for item in items:
        if item.video_id in first:
            both = (
                f"{item.path} is named twice"
                if first[item.video_id] == Path(item.path)
                else f"{first[item.video_id]} and {item.path}"
            )
            raise FeatureStoreError(
                f"video id '{item.video_id}' appears twice in the input ({both}); rename one of "
                "them, or encode them into separate stores"
            )
        first[item.video_id] = Path(item.path)

    parts_dir = out_path.with_name(out_path.name + ".parts")
    with _store_lock(out_path):
        try:
            # What the existing store already holds (with an unchanged source file).
            done: set[str] = set()
            existing: list[str] = []
            if out_path.exists():
                stored, existing = _open_settings(out_path)
                if static_clips is not None and stored.static_clips > static_clips:
                    # Enough static clips: appended to with its own count.
                    settings = replace(settings, static_clips=stored.static_clips)
                settings.check_same(stored, out_path)
                with FeatureStore(out_path) as store:
                    for item in items:
                        if item.video_id in store and _source_unchanged(store, item):
                            done.add(item.video_id)
            todo = [item for item in items if item.video_id not in done]

            # Encode the rest in fixed chunks, one shard file each; finished shards survive a kill.
            parts_dir.mkdir(parents=True, exist_ok=True)
            # A kill loses at most one shard: 64 videos, or a tenth of a small input.
            shard_videos = min(SHARD_VIDEOS, max(4, math.ceil(len(todo) / 10)))
            skipped: list[tuple[str, str]] = []
            shards = []
            with tqdm(
                total=len(todo), desc=f"extract {out_path.name}", unit="video", disable=not progress
            ) as bar:
                for number, start in enumerate(range(0, len(todo), shard_videos)):
                    chunk = todo[start : start + shard_videos]
                    shard_path = parts_dir / f"part-{number:05d}-{_chunk_key(chunk)}.h5"
                    shards.append(shard_path)
                    if shard_path.exists() and _shard_usable(shard_path, settings):
                        with h5py.File(shard_path, "r") as shard:
                            skipped.extend(
                                tuple(pair) for pair in json.loads(shard.attrs.get("skipped", "[]"))
                            )
                        bar.update(len(chunk))
                        continue
                    _write_shard(
                        shard_path,
                        chunk,
                        encoder,
                        settings,
                        config.batch_size,
                        on_error,
                        skipped,
                        bar.update,
                        transform,
                        allow_partial,
                    )

            if todo and len(skipped) == len(todo):
                # Nothing could be encoded: the store stays as it was (or is not created).
                shutil.rmtree(parts_dir, ignore_errors=True)
                return skipped

            # Merge the old store's remaining videos and the shards into one file, renamed over
            # the target.
            replaced = {item.video_id for item in todo}
            with atomic_path(out_path, suffix=".h5") as tmp, h5py.File(tmp, "w") as merged:
                merged.attrs.update(settings.as_attrs())
                merged.create_group("videos")
                if existing:
                    with h5py.File(out_path, "r") as old:
                        _copy_videos(old, merged, [v for v in existing if v not in replaced])
                for shard_path in shards:
                    with h5py.File(shard_path, "r") as shard:
                        _copy_videos(shard, merged, sorted(shard["videos"]))
            shutil.rmtree(parts_dir, ignore_errors=True)
            return skipped
        finally:
            if parts_dir.is_dir() and not any(parts_dir.iterdir()):
                parts_dir.rmdir()  # nothing finished: leave no empty folder behind


@contextlib.contextmanager
def _store_lock(out_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a store while extracting into it: a second extraction into the
    same store stops at once with a clear error instead of racing for its files."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out_path.with_name(f".{out_path.name}.lock")
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FeatureStoreError(
                f"another extraction is writing {out_path} (it holds {lock_path}); wait for it "
                "to finish, or write to another store"
            ) from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _chunk_key(chunk: Sequence[VideoItem]) -> str:
    """A short hash of a chunk's video ids, so a shard is only reused for the same chunk."""
    return hashlib.sha256("\n".join(item.video_id for item in chunk).encode()).hexdigest()[:12]


def _shard_usable(path: Path, settings: StoreSettings) -> bool:
    try:
        stored, _ = _open_settings(path)
    except (FeatureStoreError, OSError):
        return False
    return stored == settings


def _source_unchanged(store: FeatureStore, item: VideoItem) -> bool:
    source = store.source(item.video_id)
    path = Path(item.path)
    if not path.exists() or source.get("source_size") != path.stat().st_size:
        return False
    return source.get("source_sha256") == file_sha256(path)


# ---------------------------------------------------------------------------------------------
# Finding videos, and exchange with per-video .npy feature releases


def find_videos(data_dir: str | Path) -> list[VideoItem]:
    """Every video or image file under `data_dir`, with its relative path (no suffix, unless
    two files differ only by it) as id; `data_dir` may also be one such file (its name without
    suffix is the id)."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        if data_dir.suffix.lower() not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
            raise FeatureStoreError(
                f"{data_dir} is neither a folder nor a video or image file (known suffixes: "
                f"{' '.join(VIDEO_SUFFIXES + IMAGE_SUFFIXES)})"
            )
        return [VideoItem(data_dir.stem, data_dir)]
    if not data_dir.is_dir():
        raise FeatureStoreError(f"no such video file or folder: {data_dir} (not found)")
    paths = sorted(
        p
        for p in data_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES
    )
    ids = [p.relative_to(data_dir).with_suffix("").as_posix().replace("/", "__") for p in paths]
    # Files that differ only by extension (clip.avi, clip.mp4) keep it in their ids.
    clashing = {video_id for video_id in ids if ids.count(video_id) > 1}
    return [
        VideoItem(
            p.relative_to(data_dir).as_posix().replace("/", "__")
            if video_id in clashing
            else video_id,
            p,
        )
        for video_id, p in zip(ids, paths, strict=True)
    ]


def export_npy(store_path: str | Path, out_dir: str | Path, kind: str = "clip_features") -> int:
    """Write each video's (T, d) features as `<out_dir>/<video_id>.npy`; returns the count."""
    if kind not in ("clip_features", "eval_clip_features", "static_features"):
        raise ValueError(f"unknown feature kind '{kind}'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FeatureStore(store_path) as store:
        for video_id in store.video_ids():
            # Through a file handle: np.save would append ".npy" to the temporary name.
            with atomic_path(out_dir / f"{video_id}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, getattr(store, kind)(video_id))
        return len(store)


def import_npy(
    npy_dir: str | Path,
    out_path: str | Path,
    encoder_id: str,
    clip_len: int = 16,
    clip_step: int = 16,
    dtype: str = "float32",
) -> int:
    """Build a store from a folder of per-video `.npy` arrays (T, d), the layout public TAD/AD
    feature releases use. `encoder_id` names whatever made them. Static features are empty."""
    npy_dir = Path(npy_dir)
    paths = sorted(npy_dir.glob("*.npy"))
    if not paths:
        raise FeatureStoreError(f"no .npy files in {npy_dir}")
    arrays = {}
    for path in paths:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise FeatureStoreError(f"{path} is not a readable .npy array: {error}") from error
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise FeatureStoreError(
                f"{path} has shape {array.shape} ({array.dtype}); expected (T, d) floats"
            )
        if not np.isfinite(array).all():
            raise FeatureStoreError(f"{path} holds non-finite values")
        arrays[path.stem] = array
    dims = {a.shape[1] for a in arrays.values()}
    if len(dims) != 1:
        raise FeatureStoreError(
            f"the .npy files in {npy_dir} disagree on the feature width: {sorted(dims)}"
        )
    settings = StoreSettings(
        encoder_id=encoder_id,
        dim=dims.pop(),
        clip_len=clip_len,
        clip_stride=1,
        clip_step=clip_step,
        static_clips=0,
        eval_clips=0,
        frame_size=0,
        dtype=dtype,
    )
    with atomic_path(out_path, suffix=".h5") as tmp, h5py.File(tmp, "w") as store:
        store.attrs.update(settings.as_attrs())
        videos = store.create_group("videos")
        empty = np.zeros((0, settings.dim), np.float32)
        for (video_id, array), path in zip(arrays.items(), paths, strict=True):
            source = {
                "source_size": path.stat().st_size,
                "source_sha256": file_sha256(path),
                "num_frames": -1,
            }
            _write_video(
                videos.create_group(video_id),
                {"clip_features": array, "eval_clip_features": empty, "static_features": empty},
                source,
                dtype,
            )
    return len(arrays)
