"""Round benchmark: seconds per federated round for 8, 32 and 100 simulated sites.

    python benchmarks/round.py [--sites 8 32 100] [--rounds 3] [--out benchmarks/results/round.json]

Each run is the real main job (`latentveil simulate`: Flower's Simulation Engine on Ray, one
SuperNode per site, 1 CPU each) on the `tiny` world preset with N sites, so sites train on
cached features (extracted before the first round). Reported per N: the median seconds of the
rounds after the first (the first includes Ray's worker start-up), the slowest site's compute
in those rounds, and Flower's overhead = round wall time - slowest site's compute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common.config import load_config
from simulations.simulate import simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, write_result  # benchmarks/harness.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[8, 32, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default="/tmp/latentveil-bench-round")
    parser.add_argument("--out", default=str(RESULTS_DIR / "round.json"))
    args = parser.parse_args()

    rows = []
    for sites in args.sites:
        config = load_config(
            None,
            [
                "world.preset=tiny",
                f"world.sites={sites}",
                f"federation.rounds={args.rounds}",
                "train.epochs=1",
                f"evaluation.every={args.rounds}",
                "evaluation.attacker_epochs=2",
                "evaluation.probe_epochs=2",
            ],
        )
        run_dir = Path(args.work) / f"sites-{sites}"
        started = time.time()
        report_path = simulate(config, run_dir, progress=False)
        report = json.loads(report_path.read_text())
        later = [r for r in report["rounds"] if r["round"] >= 2]
        # Central evaluation runs inside the last round's wall time: leave it out.
        round_seconds = [r["seconds"] - (r.get("evaluation_seconds") or 0.0) for r in later]
        slowest = [r["slowest_site_seconds"] for r in later]
        row = {
            "sites": sites,
            "rounds": args.rounds,
            "median_round_seconds": statistics.median(round_seconds),
            "median_slowest_site_seconds": statistics.median(slowest),
            "median_flower_overhead_seconds": statistics.median(
                [w - s for w, s in zip(round_seconds, slowest, strict=True)]
            ),
            "first_round_seconds": report["rounds"][1]["seconds"],
            "bytes_per_site_per_round": report["communication"]["bytes_per_client_per_round"],
            "total_seconds_with_preparation": time.time() - started,
        }
        rows.append(row)
        print(
            f"{sites:4d} sites: round {row['median_round_seconds']:.1f} s, slowest site "
            f"{row['median_slowest_site_seconds']:.2f} s, "
            f"overhead {row['median_flower_overhead_seconds']:.1f} s"
        )
    print(f"written to {write_result(args.out, {'benchmark': 'round', 'results': rows})}")


if __name__ == "__main__":
    main()
