"""Edge benchmark: eager PyTorch against every edge backend and precision, side by side.

    python benchmarks/edge.py --run RUN_DIR [--parts default,camera,eval,videomae]
                              [--work DIR] [--out benchmarks/results/edge.json]

For the run's encoder and shipped adapter (the default: tiny3d), and for a VideoMAE-B-sized
encoder with random weights (transformers' base configuration, built here, nothing downloaded)
with a random adapter of its width:

- export time, artifact size, parity (max abs difference, least cosine) of every artifact, and
  the time to swap a new adapter into it against a full rebuild;
- throughput (clips/s) and latency per clip (p50, p99) of the whole edge path (encoder, then
  adapter), at batch 1 (one clip per call) and batch 8 (one window of 8 consecutive clips per
  call), eager and every artifact, in one process, one after the other.

With the run's world (part `eval`): the central evaluation (privacy cMAP, AR top-1,
TAD mAP, AD AUC) on features made by a reduced-precision artifact (`--eval-artifact`, OpenVINO
bf16 by default; its encoder and its adapter) against eager features, same world, same adapter,
same attackers.

With a 1-minute 768x432 camera video made from a shared real video (part `camera`):
`anonymize`'s wall time against the video's duration.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.aam import create_adapter
from common.config import AnonymizerConfig, EncoderConfig, load_config
from common.encoders import create_encoder
from common.evaluation import CentralEvaluator, EvaluationSet
from common.layout import RunLayout
from common.video import clear_video_cache
from edge_export.anonymize import anonymize_videos, collect_videos
from edge_export.artifact import (
    EdgeRuntime,
    EdgeSource,
    adapter_from_run,
    export_artifact,
    load_artifact,
    parity_clips,
    source_from_run,
    swap_adapter,
)
from edge_export.backends import available_backends

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, write_result  # benchmarks/harness.py

REAL_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_videos"
PRECISIONS = {"torch": ["fp32"], "onnx": ["fp32", "int8"], "openvino": ["fp32", "bf16"]}


def time_calls(call, inputs: torch.Tensor, seconds: float, min_calls: int) -> dict[str, float]:
    """Clips/s and per-clip latency percentiles of `call(inputs)`, after two warm-up calls."""
    clips = inputs.shape[0] * inputs.shape[1]
    for _ in range(2):
        call(inputs)
    latencies = []
    started = time.perf_counter()
    while len(latencies) < min_calls or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        call(inputs)
        latencies.append(time.perf_counter() - t)
    per_clip = np.asarray(latencies) / clips
    return {
        "clips_per_s": clips * len(latencies) / sum(latencies),
        "p50_ms_per_clip": 1000 * float(np.percentile(per_clip, 50)),
        "p99_ms_per_clip": 1000 * float(np.percentile(per_clip, 99)),
        "calls": len(latencies),
    }


def eager_call(source: EdgeSource):
    def call(clips: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = source.encoder(clips.flatten(0, 1))  # (B*T, d)
            return source.adapter(features.reshape(*clips.shape[:2], -1))  # (B, T, d)

    return call


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def bench_encoder(
    name: str, source: EdgeSource, other: EdgeSource, work: Path, seconds: float, min_calls: int
) -> dict[str, Any]:
    """Every backend and precision of one encoder + adapter, against eager."""
    inputs = {b: parity_clips(source.encoder, 1, b, seed=7) for b in (1, 8)}  # (1, b, ...)
    rows = {"eager": {f"batch_{b}": time_calls(eager_call(source), x, seconds, min_calls)
                      for b, x in inputs.items()}}  # fmt: skip
    print(f"{name} eager: {rows['eager']}", flush=True)
    for backend in [b for b in available_backends() if b in PRECISIONS]:
        for precision in PRECISIONS[backend]:
            key = f"{backend}_{precision}"
            out = work / name / key
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            metadata = export_artifact(source, backend, out, precision)
            export_seconds = time.perf_counter() - started
            runtime = load_artifact(out)
            row: dict[str, Any] = {
                "export_seconds": export_seconds,
                "artifact_bytes": folder_bytes(out),
                "parity": metadata["parity"]["checks"],
            }
            for b, x in inputs.items():
                row[f"batch_{b}"] = time_calls(runtime, x, seconds, min_calls)
                row[f"batch_{b}"]["speedup_vs_eager"] = (
                    row[f"batch_{b}"]["clips_per_s"] / rows["eager"][f"batch_{b}"]["clips_per_s"]
                )
            swapped = swap_adapter(out, other)
            row["swap_seconds"] = swapped["swap_seconds"]
            row["swap_parity"] = swapped["parity"]["checks"]["edge"]
            rows[key] = row
            print(f"{name} {key}: {row}", flush=True)
            del runtime
    return rows


def videomae_source(work: Path) -> tuple[EdgeSource, EdgeSource]:
    """A VideoMAE-B-sized encoder with random weights (saved locally, loaded as any user's
    VideoMAE folder) and two random adapters of its width."""
    from transformers import VideoMAEConfig, VideoMAEModel

    folder = work / "videomae-base-random"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        VideoMAEModel(VideoMAEConfig()).save_pretrained(folder)
    encoder = create_encoder(EncoderConfig(name="videomae", path=str(folder)))
    return tuple(
        EdgeSource(encoder, random_adapter(encoder.dim, seed), window=8, origin="random")
        for seed in (1, 2)
    )


def random_adapter(dim: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    adapter = create_adapter(dim, AnonymizerConfig(bottleneck=8)).eval()
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return adapter


class ArtifactAdapter(nn.Module):
    """An artifact's adapter part where the evaluator expects the eager adapter."""

    def __init__(self, runtime: EdgeRuntime) -> None:
        super().__init__()
        self.runtime = runtime

    def forward(self, clip_features: torch.Tensor) -> torch.Tensor:
        return self.runtime.anonymize(clip_features)


def bench_evaluation(run: Path, work: Path, backend: str, precision: str) -> dict[str, Any]:
    """The central evaluation on a reduced-precision artifact's features (its encoder and its
    adapter) against eager features."""
    from simulations.world import load_world
    from simulations.worldfeatures import (
        build_evaluation_set,
        central_evaluation_datasets,
        world_items,
    )

    config = load_config(RunLayout(run).config)
    layout = RunLayout(run)
    world = load_world(layout.world(config.world.dir))
    source = source_from_run(run)
    key = f"{backend}_{precision}"
    out = work / f"eval-{key}"
    shutil.rmtree(out, ignore_errors=True)
    export_artifact(source, backend, out, precision)
    runtime = load_artifact(out)

    from common.features import extract_features

    store = work / f"central-{key}.h5"
    store.unlink(missing_ok=True)
    started = time.perf_counter()
    extract_features(
        world_items(world, central_evaluation_datasets(world)),
        runtime.clip_encoder(),
        store,
        config.features,
        progress=False,
    )
    extract_seconds = time.perf_counter() - started
    artifact_set = build_evaluation_set(world, store)
    eager_set = EvaluationSet.load(layout.evaluation_set)
    adapter = adapter_from_run(run, source.encoder.dim)

    results: dict[str, Any] = {"artifact": key, "central_extraction_seconds": extract_seconds}
    for name, evaluation_set, anonymizer in (
        ("eager", eager_set, adapter),
        (key, artifact_set, ArtifactAdapter(runtime)),
    ):
        flat = CentralEvaluator(evaluation_set, config).evaluate(anonymizer).to_json()
        results[name] = {
            name: value
            for name, value in flat.items()
            if isinstance(value, float) and "val" not in name and "chance" not in name
        }
        print(f"evaluation {name}: {results[name]}", flush=True)
    results["difference"] = {
        name: results[key][name] - results["eager"][name]
        for name in results["eager"]
        if isinstance(results["eager"][name], float)
    }
    return results


def camera_video(work: Path) -> Path:
    """A 1-minute 768x432 30 fps H.264 video from a shared real video (scaled, looped)."""
    path = work / "camera_768x432_60s.mp4"
    if path.is_file():
        return path
    source = REAL_VIDEOS / "decord__flipping_a_pancake.mkv"
    import av

    with av.open(str(source)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 768, 432, "yuv420p"
        for i in range(60 * 30):
            frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            frame = frame.reformat(width=768, height=432)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def bench_camera(run: Path, work: Path) -> dict[str, Any]:
    """`anonymize` on a 1-minute 768x432 video with each artifact of the run's encoder."""
    video = camera_video(work)
    results: dict[str, Any] = {"video": "decord__flipping_a_pancake.mkv scaled to 768x432, "
                               "looped to 60 s at 30 fps (1800 frames)"}  # fmt: skip
    for key in ("openvino_bf16", "openvino_fp32", "onnx_fp32", "torch_fp32"):
        folder = work / "default" / key
        if not folder.is_dir():
            continue
        runtime = load_artifact(folder)
        store = work / f"camera-{key}.h5"
        store.unlink(missing_ok=True)
        clear_video_cache()  # every artifact pays the first full decode that counts the frames
        started = time.perf_counter()
        skipped = anonymize_videos(collect_videos([video]), runtime, store, progress=False)
        seconds = time.perf_counter() - started
        results[key] = {"seconds": seconds, "real_time_factor": 60.0 / seconds, "failed": skipped}
        print(f"camera {key}: {results[key]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished run folder (default config)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "latentveil-edge"))
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    parser.add_argument(
        "--parts",
        default="default,camera,eval,videomae",
        help="what to measure (default all); with fewer, the other parts of an existing --out "
        "are kept",
    )
    parser.add_argument(
        "--eval-artifact", default="openvino:bf16", help="BACKEND:PRECISION evaluated centrally"
    )
    parser.add_argument("--out", default=str(RESULTS_DIR / "edge.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    run, work = Path(args.run), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"backends": {}}
    if parts != {"default", "camera", "eval", "videomae"} and Path(args.out).is_file():
        result = {k: v for k, v in json.loads(Path(args.out).read_text()).items() if k != "machine"}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    # which command and commit measured each part (an older file may hold plain strings)
    for key in ("commands", "git"):
        if not isinstance(result.get(key), dict):
            result[key] = {}
    for part in parts:
        result["commands"][part] = " ".join(["python", *sys.argv])
        result["git"][part] = commit
    if "default" in parts:
        default, other = source_from_run(run), source_from_run(run)
        other.adapter = random_adapter(default.encoder.dim, seed=3)
        result["backends"]["default"] = bench_encoder(
            "default", default, other, work, args.seconds, min_calls=20
        )
    if "camera" in parts and REAL_VIDEOS.is_dir():
        result["camera"] = bench_camera(run, work)
    if "eval" in parts:
        backend, precision = args.eval_artifact.split(":")
        result["evaluation"] = bench_evaluation(run, work, backend, precision)
    write_result(args.out, result)  # kept even if the long VideoMAE part is interrupted
    if "videomae" in parts:
        source, other = videomae_source(work)
        result["backends"]["videomae_base"] = bench_encoder(
            "videomae", source, other, work, args.seconds, min_calls=3
        )
    print(f"written {write_result(args.out, result)}")


if __name__ == "__main__":
    main()
