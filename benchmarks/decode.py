"""Decoding speed of common.video.read_frames against a plain sequential PyAV decode.

    python benchmarks/decode.py [--out benchmarks/results/decode.json] [--repeats 3]

For every video in the shared real-video folder it times, best of `--repeats` interleaved rounds:

- `sequential_pyav`: the reference, `av.open(path).decode(video=0)` + `to_ndarray("rgb24")`;
- `read_frames(path, all indices, backend)` for backend pyav, decord and auto, both
  cold (empty probe cache: the first read of a file in a process, which includes counting
  its frames) and warm (probe and decord checks cached);
- a sparse read, the 5 evenly spaced 16-frame evaluation clips, warm.

It reports frames/s and the ratio to the sequential decode (above 1 = faster), says whether
each backend's frames equal the reference, and writes everything with machine info and the
date to a JSON file atomically. Expect about a minute on 2 CPU cores; timings on a shared
machine are noisy (the load average is recorded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from common.atomic import atomic_write_text
from common.video import (
    choose_backend,
    clear_video_cache,
    clip_frame_indices,
    eval_clip_starts,
    probe_video,
    read_frames,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = REPO.parent / "shared/data/real_videos"
DEFAULT_OUT = REPO / "benchmarks/results/decode.json"
BACKENDS = ("pyav", "decord", "auto")


def sequential_decode(path: Path) -> np.ndarray:
    """The reference: every frame of a sequential PyAV decode, (N, H, W, 3) uint8."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def timed(run: Callable[[], object], setup: Callable[[], object]) -> float:
    """Wall time of `run` after an untimed `setup`."""
    setup()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def warm_up(path: Path, backend: str) -> None:
    """Fill the probe cache and, for auto, decord's verdict, so the next read is warm."""
    probe_video(path)
    read_frames(path, [0], backend=backend)


def bench_file(path: Path, repeats: int) -> dict:
    reference = sequential_decode(path)
    n = len(reference)
    every = np.arange(n)
    eval_indices = np.concatenate(
        [clip_frame_indices(s, 16, 1) for s in eval_clip_starts(n, n=5, clip_len=16)]
    )
    exact = {}
    for backend in BACKENDS:
        clear_video_cache()
        exact[backend] = bool(np.array_equal(read_frames(path, every, backend=backend), reference))

    # (name, setup, run). Rounds run every measurement once in turn, so a load change on a
    # shared machine hits all methods alike; each keeps its best round.
    measurements: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("sequential_pyav", lambda: None, lambda: sequential_decode(path))
    ]
    for backend in BACKENDS:
        read_all = lambda b=backend: read_frames(path, every, backend=b)  # noqa: E731
        read_sparse = lambda b=backend: read_frames(path, eval_indices, backend=b)  # noqa: E731
        warm = lambda b=backend: warm_up(path, b)  # noqa: E731
        measurements += [
            (f"{backend}/cold", clear_video_cache, read_all),
            (f"{backend}/warm", warm, read_all),
            (f"{backend}/sparse", warm, read_sparse),
        ]
    best = {name: float("inf") for name, _, _ in measurements}
    for _ in range(repeats):
        for name, setup, run in measurements:
            best[name] = min(best[name], timed(run, setup))

    clear_video_cache()
    choice = choose_backend(path)
    baseline = best["sequential_pyav"]
    result: dict = {
        "file": path.name,
        "frames": n,
        "codec": probe_video(path).codec,
        "auto_backend": choice.backend,
        "auto_reason": choice.reason,
        "sequential_pyav": {"seconds": baseline, "fps": n / baseline},
        "backends": {},
    }
    for backend in BACKENDS:
        cold, warm, sparse = (best[f"{backend}/{kind}"] for kind in ("cold", "warm", "sparse"))
        result["backends"][backend] = {
            "exact": exact[backend],
            "cold_seconds": cold,
            "warm_seconds": warm,
            "cold_fps": n / cold,
            "warm_fps": n / warm,
            "cold_ratio": baseline / cold,
            "warm_ratio": baseline / warm,
            "sparse_eval_clips_seconds": sparse,
            "sparse_ratio": baseline / sparse,
        }
    return result


def overall(files: list[dict]) -> dict:
    """Totals over all files: frames per second of the summed times, and their ratios."""
    frames = sum(f["frames"] for f in files)
    base = sum(f["sequential_pyav"]["seconds"] for f in files)
    summary: dict = {"frames": frames, "sequential_pyav_fps": frames / base, "backends": {}}
    for backend in BACKENDS:
        rows = [f["backends"][backend] for f in files]
        cold = sum(r["cold_seconds"] for r in rows)
        warm = sum(r["warm_seconds"] for r in rows)
        sparse = sum(r["sparse_eval_clips_seconds"] for r in rows)
        summary["backends"][backend] = {
            "exact_on_all_files": all(r["exact"] for r in rows),
            "cold_fps": frames / cold,
            "warm_fps": frames / warm,
            "cold_ratio": base / cold,
            "warm_ratio": base / warm,
            "sparse_ratio": base / sparse,
        }
    return summary


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "av": av.__version__,
        "ffmpeg_in_av": av.library_versions.get("libavcodec"),
        "decord": __import__("decord").__version__,
        "numpy": np.__version__,
    }


def print_table(report: dict) -> None:
    header = f"{'file':42s} {'frames':>6s} {'seq fps':>8s}"
    for backend in BACKENDS:
        header += f" {backend + ' cold/warm/sparse':>26s}"
    print(header + "   (ratios to sequential PyAV; * = not exact)")
    for f in report["files"]:
        line = f"{f['file']:42s} {f['frames']:6d} {f['sequential_pyav']['fps']:8.0f}"
        for backend in BACKENDS:
            r = f["backends"][backend]
            mark = " " if r["exact"] else "*"
            cell = f"{r['cold_ratio']:.2f}/{r['warm_ratio']:.2f}/{r['sparse_ratio']:.1f}{mark}"
            line += f" {cell:>26s}"
        print(line + f"   auto={f['auto_backend']}")
    total = report["overall"]
    line = f"{'overall':42s} {total['frames']:6d} {total['sequential_pyav_fps']:8.0f}"
    for backend in BACKENDS:
        r = total["backends"][backend]
        mark = " " if r["exact_on_all_files"] else "*"
        cell = f"{r['cold_ratio']:.2f}/{r['warm_ratio']:.2f}/{r['sparse_ratio']:.1f}{mark}"
        line += f" {cell:>26s}"
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of videos")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    args = parser.parse_args(argv)

    paths = sorted(p for p in args.videos.glob("*") if p.suffix in {".mp4", ".avi", ".mkv"})
    if not paths:
        print(f"no videos in {args.videos}", file=sys.stderr)
        return 1
    info = machine()
    with warnings.catch_warnings():
        # backend="decord" warns on files it decodes differently; "exact" records that instead.
        warnings.simplefilter("ignore")
        files = [bench_file(path, args.repeats) for path in paths]
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "method": (
            f"best of {args.repeats} interleaved wall-clock rounds; all frames of each file "
            "in one read_frames call; cold = empty probe cache (first read of a file in a "
            "process), warm = probe and decord checks cached; sparse = 5 evenly spaced "
            "16-frame eval clips, warm; ratio = sequential PyAV decode time / method time"
        ),
        "files": files,
        "overall": overall(files),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
