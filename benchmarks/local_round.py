"""Local round benchmark: seconds of one site's local training round, with and without the
budget surgery, on a prepared run's features.

    latentveil prepare --config simulations/configs/default.yaml --out RUN   (once)
    python benchmarks/local_round.py --run RUN [--config CFG] [--set K=V ...] [--site site_00]
        [--reps 5] [--out benchmarks/results/local_round.json]

Each setting trains the site's seen tasks for one round (`train.epochs` epochs of
`common.training.train_local`) from the same initial model, with one torch thread as a
simulated site has. The settings are measured in turn, `--reps` times over, so that a change
in the machine's speed during the run falls on all of them alike; reported per setting: the
median and the fastest repetition, and the median's ratio to the joint step's.

- `joint`: `loss.budget_surgery=false`, one backward pass from the whole objective;
- `surgery_tasks`: the surgery projecting the tasks' gradient only (L_LC on its own: one more
  backward pass through the adapter);
- `surgery_objective`: the surgery projecting the gradient of all of the objective but the
  budget (`loss.budget_surgery_scope=objective`: no more backward passes than the joint step);
- `surgery_each_task`: the surgery projecting each seen task's gradient on its own
  (`loss.budget_surgery_scope=each_task`: one backward call per task, on its own forward).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from common.config import load_config
from common.layout import RunLayout
from common.sitedata import load_site_data, site_tensors
from common.training import train_local
from server.rounds import initial_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_CONFIG, RESULTS_DIR, write_result  # benchmarks/harness.py

SETTINGS = {
    "joint": ["loss.budget_surgery=false"],
    "surgery_tasks": ["loss.budget_surgery=true", "loss.budget_surgery_scope=tasks"],
    "surgery_objective": ["loss.budget_surgery=true", "loss.budget_surgery_scope=objective"],
    "surgery_each_task": ["loss.budget_surgery=true", "loss.budget_surgery_scope=each_task"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run folder made by `latentveil prepare`")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--site", default="site_00")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS_DIR / "local_round.json"))
    args = parser.parse_args()

    layout = RunLayout(Path(args.run))
    base = load_config(args.config, args.set)
    world = layout.world(base.world.dir)
    store = layout.site_store(args.site)
    if not store.is_file():
        parser.error(
            f"{store} does not exist: is {args.run} prepared (`latentveil prepare`) and "
            f"{args.site} one of its sites?"
        )
    data = site_tensors(load_site_data(world / args.site, store, tuple(base.tasks.seen), "train"))
    torch.set_num_threads(1)  # as a simulated site (client.site)
    torch.use_deterministic_algorithms(True, warn_only=True)
    configs = {name: load_config(args.config, args.set + o) for name, o in SETTINGS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    steps = 0.0
    for rep in range(args.reps):
        for name, config in configs.items():
            model = initial_model(config, next(iter(data.values())).clip_features.shape[-1])
            started = time.perf_counter()
            metrics = train_local(model, data, config, seed=rep)
            seconds[name].append(time.perf_counter() - started)
            steps = metrics["steps"]
            print(f"rep {rep} {name}: {seconds[name][-1]:.2f} s", flush=True)
    joint = statistics.median(seconds["joint"])
    results = {
        name: {
            "median_seconds": round(statistics.median(values), 3),
            "min_seconds": round(min(values), 3),
            "seconds": [round(v, 3) for v in values],
            "median_vs_joint": round(statistics.median(values) / joint, 3),
        }
        for name, values in seconds.items()
    }
    result = {
        "benchmark": "local_round",
        "run": str(args.run),
        "config": str(args.config),
        "overrides": args.set,
        "site": args.site,
        "videos": {name: len(task) for name, task in data.items()},
        "steps_per_round": steps,
        "reps": args.reps,
        "settings": {name: " ".join(o) for name, o in SETTINGS.items()},
        "results": results,
    }
    path = write_result(args.out, result)
    for name, row in results.items():
        print(f"{name:18s} median {row['median_seconds']:.2f} s ({row['median_vs_joint']:.2f}x)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
