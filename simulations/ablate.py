"""Generalisation and loss ablations in one command (the paper's Table 4/5 pattern).

    latentveil ablate --config simulations/configs/default.yaml --out runs/ablate

Every variant is a run of the same config on the same world and the same cached features
(prepared once in OUT/prepared; each variant's run folder links to them), differing only in
what the variant changes:

- `all_seen`: every evaluated task trained at the sites, from the config's start
  (`anonymizer.init`: the default starts from the sites' linear discriminant, which the run's
  rule ships as round 0 when no trained round beats it on validation);
- `ar_only`: only the `--seen` task trained (default ar); the others are evaluated, never
  trained: tasks the adapter never saw;
- `all_seen_random`, `ar_only_random`: the two above from the seeded random adapter
  (SPLAVU's start) at the config's bottleneck; only in the default list when the config
  starts elsewhere;

and SPLAVU's losses, each from the seeded random adapter so that the losses shape what ships
(against `ar_only_random`):

- `ar_only_videos`: the sites' videos of the other tasks join L_LC (at weight 0 in
  `tasks.seen`, so no head of theirs shapes the adapter) and L_B stays on the seen task's
  videos: no label of another task reaches the adapter, their footage does;
- `no_lc`: without the latent-consistency term (loss.w_lc 0);
- `no_budget`: without the privacy budget (loss.w_b 0);
- `paper_weights`: the paper's loss weights (loss.w_lc 100, w_t 1, w_b 1).

Writes OUT/ablation.md, ablation.json and ablation.png: per variant the selected round's
worst-case privacy cMAP and every evaluated task's metric, beside the raw features'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_path, atomic_write_text, output_folder
from common.config import LossConfig, RunConfig, apply_overrides, from_dict, to_dict
from common.errors import LatentveilError
from common.layout import RunLayout
from simulations.simulate import check_runnable, prepare_run, simulate


class AblationError(LatentveilError):
    """An ablation that cannot run as asked."""


@dataclass(frozen=True)
class Variant:
    name: str
    what: str  # one line for the table
    seen_only: bool  # train only the `seen` task
    overrides: tuple[str, ...] = ()
    # with seen_only: the other tasks' videos stay in L_LC (weight 0), L_B only on the seen task
    other_videos: bool = False


# The paper's three loss weights (LossConfig's defaults), whatever the config's own are.
_PAPER = LossConfig()
_PAPER_WEIGHTS = tuple(f"loss.{w}={getattr(_PAPER, w):g}" for w in ("w_lc", "w_t", "w_b"))

# SPLAVU's own start, whatever the config's (`anonymizer.init` discriminant starts from a
# closed-form projection that the run's rule may ship as round 0, which no loss shapes).
_RANDOM = "anonymizer.init=random"

VARIANTS = (
    Variant("all_seen", "every evaluated task trained", False),
    Variant("ar_only", "only the seen task trained; the others never", True),
    Variant(
        "all_seen_random",
        "all_seen from the seeded random adapter (SPLAVU's start), same bottleneck",
        False,
        (_RANDOM,),
    ),
    Variant(
        "ar_only_random",
        "ar_only from the seeded random adapter (SPLAVU's start), same bottleneck",
        True,
        (_RANDOM,),
    ),
    Variant(
        "ar_only_videos",
        "ar_only_random; the others' videos in L_LC, never their labels",
        True,
        (_RANDOM,),
        other_videos=True,
    ),
    Variant("no_lc", "ar_only_random without L_LC (w_lc 0)", True, (_RANDOM, "loss.w_lc=0")),
    Variant("no_budget", "ar_only_random without L_B (w_b 0)", True, (_RANDOM, "loss.w_b=0")),
    Variant(
        "paper_weights",
        "ar_only_random with the paper's weights (w_lc 100, w_b 1)",
        True,
        (_RANDOM, *_PAPER_WEIGHTS),
    ),
)
# The variants that only differ from all_seen and ar_only when the config does not start at
# random: left out of the default list for a config that does.
_RANDOM_TWINS = ("all_seen_random", "ar_only_random")


def variant_config(config: RunConfig, variant: Variant, seen: str, world_dir: Path) -> RunConfig:
    """The config a variant runs: the tasks it trains, its overrides, the shared world."""
    weights = {t: config.tasks.seen.get(t, 1.0) for t in config.tasks.evaluated}
    data = to_dict(config)
    if variant.seen_only:
        weights = {seen: weights.get(seen, 1.0)}
        if variant.other_videos:
            weights |= {t: 0.0 for t in config.tasks.evaluated if t != seen}
            data["loss"]["budget_tasks"] = [seen]
    data["tasks"]["seen"] = weights
    data["world"]["dir"] = str(world_dir)
    return from_dict(RunConfig, apply_overrides(data, list(variant.overrides)))


def _link_shared(shared: RunLayout, run: RunLayout) -> None:
    """A variant's run folder reads the prepared features instead of extracting its own."""
    run.root.mkdir(parents=True, exist_ok=True)
    for source, target in ((shared.features, run.features), (shared.central_store,
                                                              run.central_store)):  # fmt: skip
        if not target.exists() and not target.is_symlink():
            os.symlink(source.resolve(), target)


def chosen_variants(config: RunConfig, names: Sequence[str] | None) -> list[Variant]:
    """The variants named (in VARIANTS' order), or by default all of them but, for a config
    that starts from the random adapter anyway, the random twins of all_seen and ar_only."""
    unknown = set(names or ()) - {v.name for v in VARIANTS}
    if unknown:
        raise AblationError(
            f"unknown variant(s) {', '.join(sorted(unknown))}; known: "
            f"{', '.join(v.name for v in VARIANTS)}"
        )
    if names is None:
        twins = _RANDOM_TWINS if config.anonymizer.init == "random" else ()
        return [v for v in VARIANTS if v.name not in twins]
    return [v for v in VARIANTS if v.name in names]


def run_ablation(
    config: RunConfig,
    out: str | Path,
    seen: str = "ar",
    variants: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Run the variants (all of VARIANTS if None) and write the table; returns ablation.md."""
    out = Path(out)
    chosen = chosen_variants(config, variants)
    if seen not in config.tasks.evaluated:
        raise AblationError(
            f"--seen {seen!r} is not one of tasks.evaluated ({', '.join(config.tasks.evaluated)})"
        )
    check_runnable(config)  # a typo in the strategy stops here, not after the preparation
    for variant in chosen:  # a variant the config cannot run also stops here
        variant_config(config, variant, seen, Path(config.world.dir or "."))
    output_folder(out)
    shared = RunLayout(out / "prepared")
    world_dir = shared.world(config.world.dir)
    everything = variant_config(config, VARIANTS[0], seen, world_dir)
    prepare_run(everything, shared.root, progress)
    rows = []
    for variant in chosen:
        run = RunLayout(out / variant.name)
        _link_shared(shared, run)
        print(f"== ablation: {variant.name} ({variant.what})", flush=True)
        report_path = simulate(variant_config(config, variant, seen, world_dir), run.root,
                               progress=progress)  # fmt: skip
        rows.append(ablation_row(variant, json.loads(report_path.read_text())))
    return write_ablation(rows, out)


def ablation_row(variant: Variant, report: dict[str, Any]) -> dict[str, Any]:
    """One variant's numbers from its report: raw and anonymized, per metric."""
    base, anon = report["baseline"], report["anonymized"]
    metrics = {"privacy_cmap": "privacy cMAP (video, worst)"}
    metrics |= {t["metric"]: t["title"] for t in report["tasks"].values()}
    return {
        "variant": variant.name,
        "what": variant.what,
        # the tasks whose loss shaped the adapter (a task at weight 0 only lends its videos)
        "seen": sorted(t for t, w in report["config"]["tasks"]["seen"].items() if w > 0),
        "round": anon.get("round"),
        "titles": metrics,
        "raw": {key: base.get(key) for key in metrics},
        "anonymized": {key: anon.get(key) for key in metrics},
        "se": {key: anon.get(f"{key}_se") for key in metrics if key != "privacy_cmap"},
        "raw_se": {key: base.get(f"{key}_se") for key in metrics if key != "privacy_cmap"},
        # test metric per kind (AD: per anomaly kind), where the task reports one
        "by_kind": {
            key: {
                "raw": base.get(f"{key}_by_kind") or {},
                "anonymized": anon.get(f"{key}_by_kind") or {},
            }
            for key in metrics
            if base.get(f"{key}_by_kind") or anon.get(f"{key}_by_kind")
        },
    }


def ablation_markdown(rows: list[dict[str, Any]]) -> str:
    """One table: the raw features first, then every variant's selected round."""
    titles = rows[0]["titles"]

    def cell(row: dict[str, Any], side: str, key: str) -> str:
        value = row[side].get(key)
        if value is None:
            return "–"
        se = row["se" if side == "anonymized" else "raw_se"].get(key)
        return f"{value:.2f}" + (f" ± {se:.2f}" if se is not None else "")

    header = ["variant", "trained on", "round", *titles.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| raw features | – | – | " + " | ".join(cell(rows[0], "raw", k) for k in titles)
                 + " |")  # fmt: skip
    for row in rows:
        cells = [row["variant"], ", ".join(row["seen"]), str(row["round"])]
        cells += [cell(row, "anonymized", key) for key in titles]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- `{row['variant']}`: {row['what']}" for row in rows]
    return "\n".join(["# Ablation", "", *lines, "", *notes, "", *_kind_tables(rows, titles)])


def _kind_tables(rows: list[dict[str, Any]], titles: dict[str, str]) -> list[str]:
    """Per metric that has kinds (AD: anomaly kinds), one table of its test value per kind:
    each kind's videos with every normal one, so a variant's loss shows where it lies."""
    lines = []
    for key, title in titles.items():
        kinds = [row.get("by_kind", {}).get(key, {}) for row in rows]
        names = list(dict.fromkeys(n for k in kinds for side in k.values() for n in side))
        if not names:
            continue
        raw = next((k["raw"] for k in kinds if k.get("raw")), {})

        lines += [f"{title} per kind (test; each kind's videos with every normal one):", ""]
        lines += ["| variant | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        lines.append(f"| raw features | {_cells(raw, names)} |")
        for row, k in zip(rows, kinds, strict=True):
            lines.append(f"| {row['variant']} | {_cells(k.get('anonymized', {}), names)} |")
        lines.append("")
    return lines


def _cells(values: dict[str, float], names: list[str]) -> str:
    return " | ".join(f"{values[n]:.2f}" if n in values else "–" for n in names)


def write_ablation(rows: list[dict[str, Any]], out: Path) -> Path:
    """ablation.md, ablation.json and ablation.png in `out`; returns ablation.md."""
    if not rows:
        raise AblationError("no variant ran")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ablation.json", json.dumps(rows, indent=2) + "\n")
    table = out / "ablation.md"
    atomic_write_text(table, ablation_markdown(rows))
    _plot(rows, out / "ablation.png")
    return table


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    titles = rows[0]["titles"]
    names = ["raw", *(row["variant"] for row in rows)]
    fig, axis = plt.subplots(figsize=(2 + 1.6 * len(titles), 4))
    width = 0.8 / len(names)
    x = np.arange(len(titles))
    for i, name in enumerate(names):
        side, row = ("raw", rows[0]) if name == "raw" else ("anonymized", rows[i - 1])
        values = [row[side].get(key) or 0.0 for key in titles]
        axis.bar(x + i * width, values, width, label=name)
    axis.set_xticks(x + width * (len(names) - 1) / 2, list(titles.values()), fontsize=8)
    axis.set(ylabel="%", title="ablation (privacy: lower is more private)")
    axis.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
