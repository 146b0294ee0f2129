"""Deployed vs simulated round time: the same sites, the same config, the same features.

    python benchmarks/deploy.py [--config simulations/configs/default.yaml] [--rounds 3]
        [--set key=value ...] [--isolation process|subprocess]
        [--out benchmarks/results/deploy.json]

Runs the config twice on this machine: `latentveil simulate` (Flower's Simulation Engine on
Ray) and `deploy-local --insecure` (a real SuperLink and one SuperNode per site, gRPC over
127.0.0.1). The deployed sites get the simulated run's feature stores, so both train on the same
features and only the engine differs. Reported: the median round seconds over the rounds after
the first, central evaluation left out, for each engine, their ratio, and the sites' own compute
per round (what no engine can remove). Central evaluation runs only in the last round; round 0
(the raw baseline) uses the attackers the config names (`--set evaluation.attackers=logistic`
shortens it without changing a round).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from common.config import load_config
from common.layout import RunLayout
from simulations.deploy import deploy_local
from simulations.simulate import simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_CONFIG, RESULTS_DIR, write_result  # benchmarks/harness.py


def round_times(report: dict) -> dict[str, float]:
    later = [r for r in report["rounds"] if r["round"] >= 2]
    return {
        "median_round_seconds": statistics.median(
            r["seconds"] - (r.get("evaluation_seconds") or 0.0) for r in later
        ),
        "median_site_compute_seconds": statistics.median(r["site_seconds"] for r in later),
        "median_slowest_site_seconds": statistics.median(r["slowest_site_seconds"] for r in later),
        "first_round_seconds": report["rounds"][1]["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--work", default="/tmp/latentveil-bench-deploy")
    parser.add_argument(
        "--reuse",
        default=None,
        help="a run folder of the same config whose extracted features (central.h5, "
        "evaluation_set.npz, features/*.h5) to start from (they are checked as caches)",
    )
    parser.add_argument("--out", default=str(RESULTS_DIR / "deploy.json"))
    parser.add_argument(
        "--isolation",
        choices=("process", "subprocess"),
        default="process",
        help="how the deployed sites run their messages (simulations.deploy.deploy_local)",
    )
    args = parser.parse_args()
    overrides = [
        f"federation.rounds={args.rounds}",
        f"evaluation.every={args.rounds}",
        *args.overrides,
    ]
    config = load_config(args.config, overrides)
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    simulated_dir, deployed_dir = work / "simulated", work / "deployed"
    if args.reuse:
        source, target = RunLayout(Path(args.reuse)), RunLayout(simulated_dir)
        target.features.mkdir(parents=True)
        for path in (source.central_store, source.evaluation_set):
            shutil.copy(path, simulated_dir / path.name)
        for store in source.features.glob("*.h5"):
            shutil.copy(store, target.features / store.name)

    started = time.time()
    simulated = json.loads(simulate(config, simulated_dir, progress=False).read_text())
    simulated_wall = time.time() - started
    layout = RunLayout(deployed_dir)
    layout.features.mkdir(parents=True)
    for store in RunLayout(simulated_dir).features.glob("*.h5"):
        shutil.copy(store, layout.features / store.name)
    started = time.time()
    deployed = json.loads(
        deploy_local(
            config, deployed_dir, insecure=True, progress=False, isolation=args.isolation
        ).read_text()
    )
    deployed_wall = time.time() - started

    rows = {"simulated": round_times(simulated), "deployed": round_times(deployed)}
    ratio = rows["deployed"]["median_round_seconds"] / rows["simulated"]["median_round_seconds"]
    result = {
        "benchmark": "deploy",
        "config": args.config,
        "overrides": overrides,
        "sites": config.world.sites,
        "isolation": args.isolation,
        "rounds": args.rounds,
        "simulated": rows["simulated"] | {"wall_seconds": simulated_wall},
        "deployed": rows["deployed"] | {"wall_seconds": deployed_wall},
        "deployed_over_simulated": ratio,
        "wire": {k: v for k, v in (deployed.get("wire") or {}).items() if k != "per_site_round"},
    }
    for name, row in rows.items():
        print(
            f"{name:9s}: round {row['median_round_seconds']:.1f} s (sites' compute "
            f"{row['median_site_compute_seconds']:.1f} s, slowest site "
            f"{row['median_slowest_site_seconds']:.1f} s); first round "
            f"{row['first_round_seconds']:.1f} s"
        )
    print(f"deployed / simulated round time: {ratio:.2f}")
    print(f"written to {write_result(args.out, result)}")


if __name__ == "__main__":
    main()
