"""Round benchmark: seconds per federated round for 8, 32 and 100 simulated sites.

    python benchmarks/round.py [--sites 8 32 100] [--rounds 3] [--out benchmarks/results/round.json]

Each run is the real main job (`latentveil simulate`: Flower's Simulation Engine on Ray, one
SuperNode per site, 1 CPU each) on the `tiny` world preset with N sites, so sites train on
cached features (extracted before the first round). Reported per N, as medians over the rounds
after the first (the first includes Ray's worker start-up), central evaluation left out:

- round seconds, and the sites' compute summed over the round's sites (each site reports the
  seconds its ClientApp spent);
- the ideal round time = summed compute / the CPUs the engine was given (with 100 sites on 2
  cores the sites run 50 deep: the slowest site says little);
- parallel efficiency = ideal / actual round time (1 = the engine adds nothing);
- the engine's time per message = (round time - ideal) / messages, a message being one train
  request to a site or its reply.
"""

from __future__ import annotations

import argparse
import json
import os
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
        compute = [r["site_seconds"] for r in later]
        cpus = min(os.cpu_count() or 1, sites * config.federation.cpus_per_site)
        ideal = [c / cpus for c in compute]
        messages = [2 * r["sites_aggregated"] for r in later]
        row = {
            "sites": sites,
            "rounds": args.rounds,
            "engine_cpus": cpus,
            "median_round_seconds": statistics.median(round_seconds),
            "median_site_compute_seconds": statistics.median(compute),
            "median_ideal_round_seconds": statistics.median(ideal),
            "median_parallel_efficiency": statistics.median(
                [i / w for i, w in zip(ideal, round_seconds, strict=True)]
            ),
            "median_engine_seconds_per_message": statistics.median(
                [(w - i) / m for w, i, m in zip(round_seconds, ideal, messages, strict=True)]
            ),
            "first_round_seconds": report["rounds"][1]["seconds"],
            "bytes_per_site_per_round": report["communication"]["bytes_per_client_per_round"],
            "total_seconds_with_preparation": time.time() - started,
        }
        rows.append(row)
        print(
            f"{sites:4d} sites: round {row['median_round_seconds']:.1f} s, sites' compute "
            f"{row['median_site_compute_seconds']:.1f} s on {cpus} CPUs (ideal "
            f"{row['median_ideal_round_seconds']:.1f} s), parallel efficiency "
            f"{row['median_parallel_efficiency']:.2f}, engine "
            f"{1000 * row['median_engine_seconds_per_message']:.0f} ms per message"
        )
    print(f"written to {write_result(args.out, {'benchmark': 'round', 'results': rows})}")


if __name__ == "__main__":
    main()
