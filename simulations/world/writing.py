"""Writing a world: rendering planned items to mp4 / PNG files, then manifests and world.json.

Files are written atomically and recorded in a journal as they finish, so an interrupted run
is completed by running it again (see `generate_world`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path, atomic_write_text, file_sha256
from simulations import render
from simulations.world.labels import BIAS_MAJORITY
from simulations.world.planning import PlannedItem, WorldPlan, plan_world
from simulations.world.presets import Preset
from simulations.world.reading import read_manifest
from simulations.world.schema import (
    ACTIONS,
    ANOMALIES,
    ATTRIBUTES,
    FACE_ENCODING,
    FACE_STATES,
    WORLD_INFO_FILE,
    WORLD_VERSION,
    WorldError,
    manifest_path,
)

# Hidden files in a world folder: whose world it is, and which files a running generation finished
_IDENTITY_FILE = ".world-identity.json"
_JOURNAL_FILE = ".journal.jsonl"
X264_OPTIONS = {
    "crf": "18",
    "preset": "veryfast",
    # one thread and no scene-cut heuristics: the same frames give the same bytes
    "x264-params": "threads=1:bframes=0:keyint=32:min-keyint=32:scenecut=0",
}
# The numpy CPU features that x264's AVX2 code needs (its "AVX2" level implies the others).
_X264_AVX2_NEEDS = ("AVX", "AVX2", "FMA3", "BMI", "BMI2", "LZCNT")


@functools.cache
def _cpu_features() -> dict[str, bool]:
    """The CPU features numpy detected at import ({} where numpy does not say); read once."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def x264_options(cpu_features: dict[str, bool] | None = None) -> dict[str, str]:
    """The encoder options of every world video: X264_OPTIONS, with x264's AVX-512 code off.

    x264's AVX-512 code reads memory it never wrote: on a CPU with AVX-512, what the process
    had freed before (rendered frames, other videos) changed the bytes of a video, so two
    generations of the default world, seed 0, differed in 687 of its 6922 files (found by
    filling freed memory with 0xff before encoding; tests/simulations/test_world.py keeps it
    found). Where the CPU has AVX2, x264 is told to use its AVX2 code (valgrind, whose CPU has
    AVX2 and no AVX-512, finds no read of unwritten memory in it). `cpu_features` (numpy's
    names) is for tests; None reads this CPU's.
    """
    features = _cpu_features() if cpu_features is None else cpu_features
    options = dict(X264_OPTIONS)
    if all(features.get(name, False) for name in _X264_AVX2_NEEDS):
        options["x264-params"] += ":asm=AVX2"
    return options


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: int) -> int:
    """Encode (H, W, 3) uint8 RGB frames as H.264 / yuv420p mp4; returns the frame count."""
    import av

    count = 0
    with av.open(str(path), "w", format="mp4") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.thread_count = 1
                stream.options = x264_options()
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = count
            container.mux(stream.encode(video_frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def item_frames(item: PlannedItem) -> np.ndarray:
    """Render a planned item in memory: (num_frames, S, S, 3) uint8, as written before encoding."""
    if item.kind == "still":
        return render.render_still(item)[None]  # (1, S, S, 3)
    return np.stack(list(render.render_frames(item)))  # (T, S, S, 3)


def _render_to_file(item: PlannedItem, target: Path) -> str:
    """Render one item to `target` atomically; returns the file's SHA-256."""
    if item.kind == "still":
        from PIL import Image

        frame = render.render_still(item)
        with atomic_path(target, ".png", fsync=False) as tmp:
            Image.fromarray(frame).save(tmp, format="PNG", compress_level=6)
            sha = file_sha256(tmp)
        return sha
    with atomic_path(target, ".mp4", fsync=False) as tmp:
        count = write_mp4(render.render_frames(item), tmp, item.fps)
        if count != item.num_frames:
            raise RuntimeError(
                f"{item.video_id}: rendered {count} frames, planned {item.num_frames}"
            )
        sha = file_sha256(tmp)
    return sha


def _write_text(path: Path, text: str) -> None:
    """Write atomically, readable by all; a file that already says `text` is left untouched."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text() == text:
            return
    atomic_write_text(path, text)
    os.chmod(path, 0o644)


def _work(job: tuple[PlannedItem, str]) -> tuple[str, str]:
    item, root = job
    return item.video_id, _render_to_file(item, Path(root) / item.path)


def _manifest_line(item: PlannedItem, sha: str) -> str:
    return json.dumps(item.manifest_entry(sha), separators=(",", ":"))


def _identity(plan: WorldPlan) -> dict[str, Any]:
    return {
        "version": WORLD_VERSION,
        "purpose": plan.purpose,
        "preset": plan.preset.name,
        "seed": plan.seed,
        "sites": plan.preset.sites if plan.purpose == "evaluate" else 0,
        "alpha": plan.preset.alpha,
        "sizes": asdict(plan.preset),
    }


def _check_folder(root: Path, identity: dict[str, Any]) -> None:
    """Refuse a folder that holds (part of) another world."""
    for name in (WORLD_INFO_FILE, _IDENTITY_FILE):
        path = root / name
        if not path.exists():
            continue
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: an interrupted write of our own; it is rewritten
        differences = []
        for key, mine in identity.items():
            theirs = found.get(key)
            if key == "sizes" and isinstance(theirs, dict):
                differences += [
                    f"{k}={theirs.get(k)!r} (asked {v!r})"
                    for k, v in mine.items()
                    if theirs.get(k) != v and k not in ("name", "sites", "alpha")
                ]
            elif theirs != mine:
                differences.append(f"{key}={theirs!r} (asked {mine!r})")
        if differences:
            raise WorldError(
                f"{root} already holds another world ({', '.join(differences)}). Use another "
                "folder, or delete this one to generate the requested world there."
            )


def _known_hashes(root: Path, plan: WorldPlan) -> dict[str, str]:
    """SHA-256 recorded for each finished file: from manifests, then from the journal."""
    known: dict[str, str] = {}
    groups = {(it.site, it.dataset) for it in plan.items}
    for group, dataset in groups:
        path = root / manifest_path(group, dataset)
        if path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, WorldError):
                for entry in read_manifest(path):
                    known[entry["video_id"]] = entry["sha256"]
    journal = root / _JOURNAL_FILE
    if journal.exists():
        for line in journal.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                known[record["video_id"]] = record["sha256"]
    return known


def _remove_leftover_temps(root: Path, plan: WorldPlan) -> None:
    """Delete temporary files an interrupted run left (they are never taken as done)."""
    for folder in {(root / it.path).parent for it in plan.items} | {root}:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _run_jobs(jobs: list[PlannedItem], root: Path, workers: int) -> Iterator[tuple[str, str]]:
    """Render jobs in this process (workers <= 1) or a spawn pool; yields (video_id, sha256)."""
    payload = [(item, str(root)) for item in jobs]
    if workers <= 1 or len(jobs) < 2:
        for job in payload:
            yield _work(job)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=workers) as pool:
        yield from pool.imap_unordered(_work, payload, chunksize=4)


def _render_missing(root: Path, plan: WorldPlan, progress: bool, workers: int) -> dict[str, str]:
    """Keep the files that are already there and intact, render the rest; returns the SHA-256
    of every item's file. Each finished file is recorded in the journal at once."""
    from tqdm import tqdm

    known = _known_hashes(root, plan)
    hashes: dict[str, str] = {}
    jobs = []
    for item in plan.items:
        path = root / item.path
        sha = known.get(item.video_id)
        if sha is not None and path.is_file() and file_sha256(path) == sha:
            hashes[item.video_id] = sha
        else:
            jobs.append(item)
    bar = tqdm(
        total=len(plan.items), initial=len(hashes), disable=not progress, unit="file", desc="world"
    )
    with open(root / _JOURNAL_FILE, "a") as journal:
        for video_id, sha in _run_jobs(jobs, root, workers):
            hashes[video_id] = sha
            journal.write(json.dumps({"video_id": video_id, "sha256": sha}) + "\n")
            journal.flush()
            bar.update(1)
    bar.close()
    return hashes


def _write_manifests(
    root: Path, plan: WorldPlan, hashes: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """One manifest.jsonl per group and dataset; returns what world.json says of each."""
    groups: dict[tuple[str, str], list[str]] = {}
    for item in plan.items:
        groups.setdefault((item.site, item.dataset), []).append(
            _manifest_line(item, hashes[item.video_id])
        )
    datasets: dict[str, dict[str, Any]] = {}
    for (group, dataset), lines in groups.items():
        text = "\n".join(lines) + "\n"
        rel = manifest_path(group, dataset)
        _write_text(root / rel, text)
        datasets[f"{group}/{dataset}"] = {
            "manifest": rel,
            "count": len(lines),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
    return datasets


def _world_info(
    identity: dict[str, Any], plan: WorldPlan, datasets: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The content of world.json: identity, names, sizes, site mixes, cameras, manifests."""
    return {
        **identity,
        "frame_size": plan.preset.frame_size,
        "fps": plan.preset.fps,
        "clip_frames": plan.preset.clip_frames,
        "long_frames": plan.preset.long_frames,
        "attributes": list(ATTRIBUTES),
        "face_states": {state: list(FACE_ENCODING[state]) for state in FACE_STATES},
        "actions": list(ACTIONS),
        "anomalies": list(ANOMALIES),
        "bias_action": plan.bias_action,
        "bias_majority": BIAS_MAJORITY,
        "site_ids": [site["id"] for site in plan.sites],
        "site_mixes": plan.sites,
        "cameras": plan.cameras,
        "datasets": datasets,
    }


def generate_world(
    out_dir: str | os.PathLike,
    preset: str | Preset = "default",
    sites: int | None = None,
    seed: int = 0,
    alpha: float | None = None,
    purpose: str = "evaluate",
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Generate (or complete) a world in `out_dir`; returns its root.

    Files already there whose SHA-256 matches what a previous run recorded are kept as they
    are; missing, truncated or altered files are rendered again. Every file is written to a
    temporary name beside its target and renamed when complete; manifests and `world.json`
    are written last, so a world with `world.json` is complete. A folder holding a world
    with another preset / seed / sites / alpha / purpose raises WorldError.
    """
    root = Path(out_dir)
    plan = plan_world(preset, sites, seed, alpha, purpose)
    identity = json.loads(json.dumps(_identity(plan)))  # as it reads back from JSON

    # Claim the folder (or find it is ours), and clear what an interrupted run left
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorldError(f"cannot create the world folder {root}: {error}") from None
    _check_folder(root, identity)
    _write_text(root / _IDENTITY_FILE, json.dumps(identity, indent=1) + "\n")
    _remove_leftover_temps(root, plan)

    # Files, then manifests, then world.json last
    hashes = _render_missing(root, plan, progress, workers)
    datasets = _write_manifests(root, plan, hashes)
    info = _world_info(identity, plan, datasets)
    _write_text(root / WORLD_INFO_FILE, json.dumps(info, indent=1) + "\n")
    (root / _JOURNAL_FILE).unlink(missing_ok=True)
    return root
