"""Attacker-suite benchmark: seconds per attacker at the default evaluation set's sizes.

    python benchmarks/attackers.py [--out benchmarks/results/attackers.json]

The suite runs at every evaluated round of a run (common.attackers), on two protocols: video
(800 / 300 / 2000 videos) and stills (1000 / 400 / 1000 images), d = 256, 7 attributes. The
data are generated (attributes mixed linearly into Gaussian features, then passed through a
random invertible map as an adapter would), so the numbers measure cost, not leakage. The
inversion attacker's raw-feature fits are cached across rounds: the second call shows the
per-round cost a run pays after round 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common.attackers import ATTACKERS, AttackData, Split, SuiteSettings, run_attacker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, write_result

DIM, ATTRIBUTES = 256, 7
PROTOCOLS = {"video": (800, 300, 2000), "stills": (1000, 400, 1000)}


def protocol_data(sizes: tuple[int, int, int], seed: int = 0) -> AttackData:
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(ATTRIBUTES, DIM))
    mixing = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    splits, raws = [], []
    for n in sizes:
        labels = (rng.random((n, ATTRIBUTES)) < 0.3).astype(np.float32)
        raw = (rng.normal(size=(n, DIM)) + labels @ directions).astype(np.float32)
        splits.append(Split(np.tanh(raw @ mixing).astype(np.float32), labels))
        raws.append(raw)
    return AttackData(*splits, raw_train=raws[0], raw_val=raws[1], raw_test=raws[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS_DIR / "attackers.json"))
    args = parser.parse_args()
    results = {}
    for protocol, sizes in PROTOCOLS.items():
        data, cache = protocol_data(sizes), {}
        for name in ATTACKERS.names():
            timings = []
            for _ in range(2):  # the first call fills the cache a run keeps across rounds
                started = time.perf_counter()
                result = run_attacker(name, data, SuiteSettings(), cache)
                timings.append(time.perf_counter() - started)
            results[f"{protocol}/{name}"] = {
                "first_seconds": round(timings[0], 2),
                "per_round_seconds": round(timings[1], 2),
                "test_cmap": round(result.test_cmap, 2),
            }
            print(protocol, name, results[f"{protocol}/{name}"], flush=True)
    total = sum(r["per_round_seconds"] for r in results.values())
    path = write_result(args.out, {"attackers": results, "suite_seconds_per_round": total})
    print(f"suite: {total:.1f} s per evaluated round; written to {path}")


if __name__ == "__main__":
    main()
