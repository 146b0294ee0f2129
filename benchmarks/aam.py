"""AAM benchmark: parameter count and forward+backward throughput on this CPU.

    python benchmarks/aam.py [--out benchmarks/results/aam.json] [--threads 2]

For d = 256 (tiny3d) and d = 768 (VideoMAE-B width), sequences of T = 1 and T = 32 clips,
batch 64: sequences per second of one forward + backward + AdamW step on the latent
consistency loss (the adapter's share of a SPLAVU training step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from common.aam import create_adapter
from common.config import AnonymizerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, write_result


def measure(dim: int, seq_len: int, batch: int, min_seconds: float) -> dict[str, float]:
    """Time forward+backward+step of the default AAM; returns params and sequences/s."""
    torch.manual_seed(0)
    adapter = create_adapter(dim, AnonymizerConfig())
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    features = torch.randn(batch, seq_len, dim)  # (B, T, d)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = (adapter(features) - features).pow(2).mean() - adapter(features).mean()
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or steps < 3:
        step()
        steps += 1
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in adapter.parameters())
    return {
        "dim": dim,
        "seq_len": seq_len,
        "batch": batch,
        "params": params,
        "param_megabytes_fp32": params * 4 / 1e6,
        "steps": steps,
        "seconds_per_step": seconds / steps,
        "sequences_per_second": batch * steps / seconds,
        "clips_per_second": batch * seq_len * steps / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RESULTS_DIR / "aam.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for dim in (256, 768):
        for seq_len in (1, 32):
            row = measure(dim, seq_len, args.batch, args.min_seconds)
            rows.append(row)
            print(
                f"d={dim:4d} T={seq_len:2d} params={row['params']:>10,d} "
                f"{row['sequences_per_second']:9.1f} seq/s  {row['clips_per_second']:9.1f} clips/s"
            )
    path = write_result(args.out, {"benchmark": "aam", "results": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
