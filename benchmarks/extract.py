"""Extraction benchmark: clips/s of `latentveil extract` with the default (built-in) encoder.

    python benchmarks/extract.py [--preset default] [--world DIR] [--limit 600] [--eval-clips E]
                                [--out FILE.json]

Generates a world of the given preset (kept in --work for reruns; or takes --world), then
times a fresh extraction of its central datasets (AR, TAD, AD, privacy stills, bias): decoding,
preprocessing and encoding, end to end, as the command does it. `clips` counts the stored clip
features (non-overlapping, evaluation and static clips); an evaluation clip that coincides with
a non-overlapping one is encoded once, so fewer clips go through the encoder than are stored.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import torch

from common.config import RunConfig
from common.encoders import create_encoder
from common.features import extract_features
from simulations.world import generate_world, load_world
from simulations.worldfeatures import central_evaluation_datasets, world_items

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, write_result  # benchmarks/harness.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--limit", type=int, default=600, help="files to encode (0 = all)")
    parser.add_argument("--work", default="/tmp/latentveil-bench-extract")
    parser.add_argument("--world", default=None, help="an existing world to use instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-clips", type=int, default=None, help="features.eval_clips")
    parser.add_argument("--out", default=str(RESULTS_DIR / "extract.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = RunConfig()
    if args.eval_clips is not None:
        config = replace(config, features=replace(config.features, eval_clips=args.eval_clips))
    work = Path(args.work)
    if args.world:
        world = load_world(args.world)
    else:
        root = generate_world(work / f"world-{args.preset}", preset=args.preset, progress=False)
        world = load_world(root)
    # Every central dataset, interleaved as in the real store, capped at --limit.
    items = world_items(world, central_evaluation_datasets(world))
    if args.limit:
        step = max(1, len(items) // args.limit)
        items = items[::step][: args.limit]
    encoder = create_encoder(config.encoder)
    store = work / "bench.h5"
    shutil.rmtree(work / "bench.h5.parts", ignore_errors=True)
    store.unlink(missing_ok=True)

    start = time.perf_counter()
    extract_features(items, encoder, store, config.features, progress=False)
    seconds = time.perf_counter() - start
    with h5py.File(store) as handle:
        clips = sum(
            group[name].shape[0]
            for group in handle["videos"].values()
            for name in ("clip_features", "eval_clip_features", "static_features")
        )
    result = {
        "benchmark": "extract",
        "preset": args.preset,
        "encoder_id": encoder.encoder_id,
        "eval_clips": config.features.eval_clips,
        "files": len(items),
        "clips": clips,
        "seconds": seconds,
        "clips_per_second": clips / seconds,
        "files_per_second": len(items) / seconds,
    }
    print(f"{len(items)} files, {clips} clips in {seconds:.1f} s: {clips / seconds:.1f} clips/s")
    print(f"written to {write_result(args.out, result)}")


if __name__ == "__main__":
    main()
