"""Several seeds of one or more settings, side by side: what a single run cannot tell.

One run's privacy and utility move with its seed by more than many of the effects worth
knowing (README, "Measured results"), so a setting is judged on several seeds, and two settings
on the seeds they share. This reads each run folder's report.json and config.yaml and writes,
for every setting (a named group of runs, one per seed):

- each seed's selected round, privacy (worst-case video cMAP, val / test) and every evaluated
  task's change from the raw features on test (and on val);
- the mean and standard error over seeds of each, and how many seeds keep each task within its
  allowed drop (the run's `tasks.evaluated`, or `within`);
- each attacker of the suite on its own (video cMAP, val / test), so that a difference in the
  worst case can be traced to the attackers that make it;
- every setting after the first minus the first, paired on their shared seeds.

    latentveil seeds --group "w_lc 1" runs/a_s*/ar_only --group "w_lc 2" runs/b_s*/ar_only \\
        --out runs/seeds
    -> runs/seeds/seeds.md (tables), seeds.json, seeds.png

Every run must be on one world and one set of features: the raw-feature baselines of all runs
must agree, or the changes would not be comparable.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from common.atomic import atomic_path, atomic_write_text, output_folder
from common.errors import LatentveilError
from common.layout import RunLayout

# Raw-feature numbers that differ by more than this are from another world or other features.
BASELINE_TOLERANCE = 1e-6


class SeedsError(LatentveilError):
    """Run folders that cannot be summarized together."""


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """One run's seed and numbers: privacy val / test (the worst case, and each attacker's on
    video), and per evaluated task its raw, test and val numbers, the raw val, its allowed
    drop and (AD) its per-kind test numbers."""
    run = Path(run_dir)
    layout = RunLayout(run)
    if not run.is_dir():
        raise SeedsError(f"run folder {run} does not exist")
    if not layout.report_json.is_file():
        raise SeedsError(
            f"{run} has no report.json (a finished run folder, or an ablation's <variant> "
            "subfolder)"
        )
    if not layout.config.is_file():
        raise SeedsError(f"{run} has no config.yaml, so its seed is unknown")
    try:
        report = json.loads(layout.report_json.read_text())
        config = yaml.safe_load(layout.config.read_text())
        seed = (int(config["seed"]), int(config["train"]["seed"]))
        base, anon, sel = report["baseline"], report["anonymized"], report["selection"]
        raw_val = sel["raw"]
        tasks = {}
        for name, keys in report["tasks"].items():
            test_key, val_key = keys["metric"], keys["val_metric"]
            kinds = anon.get(f"{test_key}_by_kind") or {}
            raw_kinds = base.get(f"{test_key}_by_kind") or {}
            tasks[name] = {
                "title": keys["title"],
                "raw": float(base[test_key]),
                "test": float(anon[test_key]),
                "raw_val": float(raw_val[val_key]),
                "val": float(sel[val_key]),
                "allowed": float(sel["max_val_drop"][name]),
                "kinds": {k: float(v) for k, v in kinds.items() if k in raw_kinds},
                "raw_kinds": {k: float(v) for k, v in raw_kinds.items()},
            }
        video = (report.get("privacy_attackers") or {}).get("video") or {}
        attackers = {
            name: {
                "val": float(entry["anonymized"]["val_cmap"]),
                "test": float(entry["anonymized"]["test_cmap"]),
            }
            for name, entry in video.items()
        }
        return {
            "run": str(run),
            "seed": seed,
            "round": anon["round"],
            "raw_privacy": float(base["privacy_cmap"]),
            "privacy_val": float(sel["privacy_val_cmap"]),
            "privacy_test": float(anon["privacy_cmap"]),
            "tasks": tasks,
            "attackers": attackers,
        }
    except KeyError as error:
        raise SeedsError(
            f"{run} is not a latentveil run folder: its report.json or config.yaml lacks {error}"
        ) from error
    except (TypeError, AttributeError) as error:
        raise SeedsError(
            f"{run}: its report.json or config.yaml has a value of the wrong type: {error}"
        ) from error
    except (ValueError, yaml.YAMLError) as error:
        raise SeedsError(
            f"{run}: its report.json or config.yaml cannot be read: {error}"
        ) from error


def seed_label(seed: tuple[int, int]) -> str:
    """'3' when the run's seed and train.seed agree, else '3/4' (seed/train.seed)."""
    return str(seed[0]) if seed[0] == seed[1] else f"{seed[0]}/{seed[1]}"


def _check_same_baseline(runs: Sequence[dict[str, Any]]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if set(run["tasks"]) != set(first["tasks"]):
            raise SeedsError(
                f"{run['run']} evaluates {sorted(run['tasks'])} but {first['run']} evaluates "
                f"{sorted(first['tasks'])}: compare runs that evaluate the same tasks"
            )
        pairs = [("privacy cMAP", run["raw_privacy"], first["raw_privacy"])] + [
            (task["title"], task["raw"], first["tasks"][name]["raw"])
            for name, task in run["tasks"].items()
        ]
        for what, mine, theirs in pairs:
            if abs(mine - theirs) > BASELINE_TOLERANCE:
                raise SeedsError(
                    f"{run['run']} and {first['run']} have different raw-feature baselines "
                    f"({what} {mine:.2f} and {theirs:.2f}): they are not on one world and one "
                    "set of features (make them with --set world.dir=<one world>)"
                )


def _changes(run: Mapping[str, Any]) -> dict[str, float]:
    """The quantities summarized: privacy val / test, then each task's change from raw on test
    and on val, then each AD kind's change on test, then each attacker's privacy val / test
    (`privacy_val@mlp`, `privacy_test@mlp`)."""
    out = {"privacy_val": run["privacy_val"], "privacy_test": run["privacy_test"]}
    for name, task in run["tasks"].items():
        out[name] = task["test"] - task["raw"]
        out[f"{name}_val"] = task["val"] - task["raw_val"]
        for kind, value in task["kinds"].items():
            out[f"{name}_{kind}"] = value - task["raw_kinds"][kind]
    for name, cmap in run["attackers"].items():
        out[f"privacy_val@{name}"], out[f"privacy_test@{name}"] = cmap["val"], cmap["test"]
    return out


def mean_se(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and standard error of the mean (None for one value)."""
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"n": n, "mean": mean, "se": se}


def summarize_seeds(
    groups: Sequence[tuple[str, Sequence[str | Path]]], within: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The per-seed rows, per-setting summaries and paired differences (module docstring).
    `groups` are (setting name, run folders); `within` overrides a task's allowed drop."""
    if not groups:
        raise SeedsError("give at least one --group NAME RUN...")
    names = [name for name, _ in groups]
    if len(set(names)) != len(names):
        raise SeedsError(f"two groups have the same name: {names}")
    settings: dict[str, list[dict[str, Any]]] = {}
    for name, run_dirs in groups:
        if not run_dirs:
            raise SeedsError(f"group {name!r} has no run folder")
        runs = sorted((read_run(r) for r in run_dirs), key=lambda r: r["seed"])
        for a, b in itertools.pairwise(runs):
            if a["seed"] == b["seed"]:
                raise SeedsError(
                    f"group {name!r} has two runs of seed {seed_label(a['seed'])}: "
                    f"{a['run']} and {b['run']} (one run per seed)"
                )
        for run in runs:
            run["changes"] = _changes(run)
        settings[name] = runs
    every = [run for runs in settings.values() for run in runs]
    _check_same_baseline(every)
    first = every[0]
    unknown = sorted(set(within or {}) - set(first["tasks"]))
    if unknown:
        raise SeedsError(f"--within names tasks the runs do not evaluate: {unknown}")
    allowed = {}
    for name, task in first["tasks"].items():
        drops = {run["tasks"][name]["allowed"] for run in every}
        if name not in (within or {}) and len(drops) > 1:
            raise SeedsError(
                f"the runs allow {name} different drops ({sorted(drops)}, tasks.evaluated): "
                f"give one with --within {name}=POINTS"
            )
        allowed[name] = float((within or {}).get(name, task["allowed"]))
    summaries, paired = {}, {}
    for name, runs in settings.items():
        changes = [run["changes"] for run in runs]
        keys = [k for k in changes[0] if all(k in c for c in changes)]
        summaries[name] = {
            "seeds": [seed_label(run["seed"]) for run in runs],
            "stats": {k: mean_se([c[k] for c in changes]) for k in keys},
            "within": {
                task: sum(c[task] >= -drop for c in changes) for task, drop in allowed.items()
            },
        }
    reference = names[0]
    by_seed = {run["seed"]: run["changes"] for run in settings[reference]}
    for name in names[1:]:
        shared = [run for run in settings[name] if run["seed"] in by_seed]
        diffs = [(by_seed[run["seed"]], run["changes"]) for run in shared]
        keys = [k for k in summaries[name]["stats"] if all(k in a and k in b for a, b in diffs)]
        paired[name] = {
            "seeds": [seed_label(run["seed"]) for run in shared],
            "stats": {k: mean_se([b[k] - a[k] for a, b in diffs]) for k in keys} if diffs else {},
        }
    return {
        "raw": {
            "privacy_cmap": first["raw_privacy"],
            **{name: task["raw"] for name, task in first["tasks"].items()},
            **{
                f"{name}_{kind}": value
                for name, task in first["tasks"].items()
                for kind, value in task["raw_kinds"].items()
            },
        },
        "titles": {name: task["title"] for name, task in first["tasks"].items()},
        "kinds": [
            f"{name}_{kind}" for name, task in first["tasks"].items() for kind in task["raw_kinds"]
        ],
        "attackers": list(dict.fromkeys(a for run in every for a in run["attackers"])),
        "allowed": allowed,
        "reference": reference,
        "runs": {
            name: [run | {"seed": seed_label(run["seed"])} for run in runs]
            for name, runs in settings.items()
        },
        "summaries": summaries,
        "paired": paired,
    }


def _pm(stat: Mapping[str, Any] | None, signed: bool = True) -> str:
    if not stat:
        return "–"
    mean = f"{stat['mean']:+.2f}" if signed else f"{stat['mean']:.2f}"
    return mean if stat["se"] is None else f"{mean} ± {stat['se']:.2f}"


def seeds_markdown(result: Mapping[str, Any]) -> str:
    """The per-seed table, the summary over seeds and the paired differences."""
    titles, raw, allowed = result["titles"], result["raw"], result["allowed"]
    tasks = list(titles)
    names = list(result["summaries"])
    raw_text = ", ".join([f"privacy {raw['privacy_cmap']:.2f}"] + [
        f"{titles[t]} {raw[t]:.2f}" for t in tasks
    ])  # fmt: skip
    lines = [
        f"Runs on one world and one set of features (raw: {raw_text}). Privacy is the "
        "worst-case attacker cMAP on video features (lower is more private), val / test; every "
        "task is the change from raw on test (val in brackets), at each run's selected round.",
        "",
        "| seed | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    rows: dict[str, dict[str, str]] = {}
    for name, runs in result["runs"].items():
        for run in runs:
            c = run["changes"]
            cell = f"round {run['round']}, {run['privacy_val']:.2f} / {run['privacy_test']:.2f}"
            for t in tasks:
                cell += f", {t.upper()} {c[t]:+.2f} ({c[f'{t}_val']:+.2f})"
            rows.setdefault(run["seed"], {})[name] = cell
    for seed in sorted(rows, key=lambda s: [int(p) for p in s.split("/")]):
        lines.append(f"| {seed} | " + " | ".join(rows[seed].get(n, "–") for n in names) + " |")
    within = ", ".join(f"{t.upper()} {allowed[t]:g}" for t in tasks)
    header = ["setting", "seeds", "privacy val", "privacy test"]
    header += [titles[t] for t in tasks] + [f"seeds within the allowed drop on test ({within})"]
    lines += ["", "Mean ± standard error over seeds (tasks: change from raw on test):", ""]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, summary in result["summaries"].items():
        stats, n = summary["stats"], len(summary["seeds"])
        cells = [name, str(n), _pm(stats["privacy_val"], False), _pm(stats["privacy_test"], False)]
        cells += [_pm(stats[t]) for t in tasks]
        cells.append(", ".join(f"{t.upper()} {summary['within'][t]}/{n}" for t in tasks))
        lines.append("| " + " | ".join(cells) + " |")
    kinds = [k for k in result["kinds"] if k in result["summaries"][names[0]]["stats"]]
    if kinds:
        lines += ["", "Per kind, change from raw on test (mean ± standard error):", ""]
        lines += [
            "| setting | " + " | ".join(f"{_kind(k)} (raw {raw[k]:.2f})" for k in kinds) + " |"
        ]
        lines += ["|---|" + "---|" * len(kinds)]
        for name, summary in result["summaries"].items():
            cells = [_pm(summary["stats"].get(k)) for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _attacker_tables(result)
    if result["paired"]:
        reference = result["reference"]
        keys = ["privacy_val", "privacy_test", *tasks, *(f"{t}_val" for t in tasks), *kinds]
        heads = ["privacy val", "privacy test", *(titles[t] for t in tasks)]
        heads += [f"{titles[t]} (val)" for t in tasks] + [_kind(k) for k in kinds]
        lines += ["", f"Paired on shared seeds, each setting minus {reference}:", ""]
        lines += [
            "| setting | seeds | " + " | ".join(heads) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for name, pair in result["paired"].items():
            cells = [_pm(pair["stats"].get(k)) for k in keys]
            seeds = ", ".join(pair["seeds"]) or "none shared"
            lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _attacker_tables(result: Mapping[str, Any]) -> list[str]:
    """Each attacker's privacy per setting and, paired, each setting minus the first."""
    attackers = [
        a
        for a in result["attackers"]
        if any(f"privacy_test@{a}" in s["stats"] for s in result["summaries"].values())
    ]
    if not attackers:
        return []

    def cell(values: Mapping[str, Any], attacker: str, signed: bool) -> str:
        val, test = values.get(f"privacy_val@{attacker}"), values.get(f"privacy_test@{attacker}")
        return f"{_pm(val, signed)} / {_pm(test, signed)}"

    head = ["| setting | " + " | ".join(attackers) + " |", "|---|" + "---|" * len(attackers)]
    lines = [
        "",
        "Privacy per attacker of the suite (video cMAP, val / test, mean ± standard error; the "
        "privacy above is each run's worst case over the suite, on val and on test apart):",
        "",
        *head,
    ]
    for name, summary in result["summaries"].items():
        cells = [cell(summary["stats"], a, False) for a in attackers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result["paired"]:
        lines += ["", f"Per attacker, paired, each setting minus {result['reference']}:", ""]
        lines += head
        for name, pair in result["paired"].items():
            cells = [cell(pair["stats"], a, True) for a in attackers]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _kind(key: str) -> str:
    """'AD fall' for the key 'ad_fall'."""
    task, _, kind = key.partition("_")
    return f"{task.upper()} {kind}"


def write_seeds(
    groups: Sequence[tuple[str, Sequence[str | Path]]],
    out_dir: str | Path,
    within: Mapping[str, float] | None = None,
) -> Path:
    """seeds.md, seeds.json and seeds.png in `out_dir`; returns the table's path."""
    result = summarize_seeds(groups, within)
    out = output_folder(out_dir)
    atomic_write_text(out / "seeds.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "seeds.md", seeds_markdown(result))
    _plot(result, out / "seeds.png")
    return out / "seeds.md"


def _plot(result: Mapping[str, Any], path: Path) -> None:
    """One panel per task (change from raw on test, each seed a dot, mean ± standard error a
    bar, the allowed drop dashed) and one for privacy on test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, names = list(result["titles"]), list(result["summaries"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.2 * (len(tasks) + 1), 3.8))
    panels = [("privacy_test", "privacy cMAP on test (lower = more private)", None)]
    panels += [(t, f"{result['titles'][t]}: change from raw", result["allowed"][t]) for t in tasks]
    for axis, (key, label, drop) in zip(axes, panels, strict=True):
        for x, name in enumerate(names):
            values = [run["changes"][key] for run in result["runs"][name]]
            stat = result["summaries"][name]["stats"][key]
            axis.scatter([x] * len(values), values, s=12, alpha=0.5)
            axis.errorbar([x + 0.15], [stat["mean"]], yerr=[stat["se"] or 0], fmt="o",
                          color="black", capsize=3)  # fmt: skip
        if drop is not None:
            axis.axhline(0, color="gray", linewidth=0.8)
            axis.axhline(-drop, color="gray", linestyle="--", label=f"{drop:g} below raw")
            axis.legend(fontsize=7)
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_xlim(-0.5, len(names) - 0.3)
        axis.set_title(label, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
