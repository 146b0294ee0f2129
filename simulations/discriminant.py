"""The closed-form anonymizer (common.discriminant) of a run's sites, measured like a run.

From a prepared or finished run folder it sums each simulated site's moments of its training
clips that show an action (what one federated round of sums would deliver; each site's share
is listed): by default from the videos of the tasks the run trains, as the run's own
`anonymizer.init: discriminant` would (AR's every clip, TAD's clips inside a segment),
fits the linear discriminant projection for every shrinkage of a grid, and evaluates each
with the run's central protocol (the attacker suite on video features, every evaluated
task). The shrinkage is chosen by the run's own rule on VALIDATION numbers
(server.selection): the lowest validation privacy cMAP among fits whose every evaluated
task's validation metric is within its allowed drop of the raw features'. The test split is
reported, never read.

    latentveil discriminant runs/default --out runs/discriminant
    -> runs/discriminant/discriminant.md, discriminant.json, and a run-like folder
       (config.yaml, evaluation_set.npz, adapter.npz) that `latentveil task-privacy`,
       `crossfit` and `export` read as they read a run's
"""

from __future__ import annotations

import functools
import json
import operator
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_path, atomic_write_text, check_output_folder, output_folder
from common.config import RunConfig, save_config
from common.discriminant import ClassMoments, DiscriminantError, fit_discriminant, trained_tasks
from common.evaluation import CentralEvaluator, Evaluation, EvaluationSet
from common.layout import RunLayout
from common.sitedata import load_task_arrays, site_datasets
from common.weights import load_shareable
from edge_export.artifact import run_config
from server.rounds import initial_model, save_adapter
from server.selection import qualifies, replaces, shortfall
from simulations.simulate import world_dir_of
from simulations.world.reading import load_world

# Shrinkage of the within-action covariance towards a multiple of the identity: 0 trusts the
# sample covariance fully (the most private fit, if the tasks survive it), 1 ignores it.
SHRINKAGES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
HEAD_TASK = "ar"  # the task whose head the discriminant's rule is: the action classes'


def site_moments(
    run_dir: str | Path, config: RunConfig, tasks: Sequence[str] | None = None
) -> dict[str, dict[str, ClassMoments]]:
    """Per simulated site, per task of `tasks` (the run's `trained_tasks` if None) whose labels
    name actions, the moments of its training clips that show an action (`Task.action_clips`);
    sites without such clips are left out."""
    tasks = trained_tasks(config) if tasks is None else tuple(tasks)
    unknown = [name for name in tasks if name not in config.tasks.seen]
    if unknown:
        raise DiscriminantError(
            f"task(s) {', '.join(unknown)} are not among the tasks the run's sites encoded, its "
            f"seen tasks ({', '.join(config.tasks.seen)})"
        )
    layout = RunLayout(Path(run_dir))
    world = load_world(world_dir_of(config, layout.root))
    out = {}
    for site in world.sites:
        data = {}
        for name in site_datasets(world.root / site, tasks):  # the tasks the site has videos of
            arrays = load_task_arrays(world.root / site, layout.site_store(site), name, "train")
            if arrays is not None:
                data[name] = arrays
        moments = ClassMoments.per_task(data, config.heads.num_actions)
        if moments:
            out[site] = moments
    if not out:
        raise DiscriminantError(
            f"no site of {run_dir} has training clips labelled with actions in the videos of "
            f"{', '.join(tasks) or 'no task'}"
        )
    return out


def discriminant_config(config: RunConfig, directions: int) -> RunConfig:
    """The run's config with the adapter the projection is: no blocks, rank `directions`,
    action recognition its one seen task (its head is the discriminant's rule)."""
    anonymizer = replace(config.anonymizer, layers=0, bottleneck=directions)
    return replace(
        config, anonymizer=anonymizer, tasks=replace(config.tasks, seen={HEAD_TASK: 1.0})
    )


def _summary(evaluation: Evaluation) -> dict[str, Any]:
    privacy = evaluation.privacy
    return {
        "privacy_val": privacy.val_cmap,
        "privacy_test": privacy.cmap,
        "attacker": privacy.attacker,
        "chance": privacy.chance_cmap,
        "tasks": {
            name: {"val": score.val, "test": score.test, "test_se": score.test_se}
            for name, score in evaluation.tasks.items()
        },
    }


def write_discriminant(
    run_dir: str | Path,
    out_dir: str | Path,
    directions: int | None = None,
    shrinkages: Sequence[float] = SHRINKAGES,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Fit, evaluate and choose (see the module); write the result into `out_dir`."""
    say = progress or (lambda _: None)
    check_output_folder(out_dir)  # before the work; written only at its end
    if not shrinkages:
        raise DiscriminantError("name at least one shrinkage")
    for shrinkage in shrinkages:
        if not 0 <= shrinkage <= 1:  # also NaN
            raise DiscriminantError(f"a shrinkage must be in [0, 1], got {shrinkage!r}")
    layout = RunLayout(Path(run_dir))
    config = run_config(run_dir)
    if not layout.evaluation_set.is_file():
        raise DiscriminantError(f"{run_dir} has no {layout.evaluation_set.name} (not prepared)")
    per_task = site_moments(run_dir, config, tasks)
    per_site = {site: functools.reduce(operator.add, m.values()) for site, m in per_task.items()}
    moments = functools.reduce(operator.add, per_site.values())
    used = sorted({name for m in per_task.values() for name in m})  # tasks that gave clips
    classes = int((moments.counts > 0).sum())
    directions = classes - 1 if directions is None else directions
    fits = [fit_discriminant(moments, directions, s) for s in shrinkages]  # errors before work
    fitted = discriminant_config(config, directions)
    evaluation_set = EvaluationSet.load(layout.evaluation_set)
    evaluator = CentralEvaluator(evaluation_set, fitted)
    say("raw features")
    baseline = evaluator.evaluate(None, stills=False)
    evaluations: list[Evaluation] = []
    chosen = 0
    for index, (shrinkage, fit) in enumerate(zip(shrinkages, fits, strict=True)):
        say(f"shrinkage {shrinkage:g}")
        model = initial_model(fitted, evaluation_set.dim)
        load_shareable(model, fit.shareable_arrays())
        evaluations.append(evaluator.evaluate(model.adapter, stills=False))
        if index and replaces(evaluations[-1], evaluations[chosen], baseline, fitted):
            chosen = index
    allowed = fitted.tasks.evaluated
    result = {
        "run": str(run_dir),
        "directions": directions,
        "tasks": used,
        "clips_per_task": {
            name: sum(int(m[name].counts.sum()) for m in per_task.values() if name in m)
            for name in used
        },
        "clips": {name: int(m.counts.sum()) for name, m in per_site.items()},
        "clips_per_class": [int(c) for c in moments.counts],
        "baseline": _summary(baseline),
        "fits": [
            {
                "shrinkage": shrinkage,
                "ratios": [float(r) for r in fit.ratios],
                "qualifies": qualifies(evaluation, baseline, allowed),
                "shortfall": shortfall(evaluation, baseline, allowed),
                **_summary(evaluation),
            }
            for shrinkage, fit, evaluation in zip(shrinkages, fits, evaluations, strict=True)
        ],
        "selected": chosen,
        "allowed_drops": dict(allowed),
    }
    out = output_folder(out_dir)
    out_layout = RunLayout(out)
    save_config(fitted, out_layout.config)
    with atomic_path(out_layout.evaluation_set, suffix=".npz") as tmp:
        shutil.copyfile(layout.evaluation_set, tmp)
    save_adapter(fits[chosen].shareable_arrays(), out_layout.adapter)
    atomic_write_text(out / "discriminant.json", json.dumps(result, indent=2) + "\n")
    table = out / "discriminant.md"
    atomic_write_text(table, discriminant_markdown(result))
    return table


def discriminant_markdown(result: dict[str, Any]) -> str:
    """One row per shrinkage and one for the raw features: privacy (val / test, its attacker)
    and each task's val / test; the chosen fit in bold."""
    tasks = list(result["baseline"]["tasks"])
    lines = [
        f"Linear discriminant projection onto {result['directions']} directions, fitted to the "
        "clips that show an action in the "
        + ", ".join(f"{t} videos ({n} clips)" for t, n in result["clips_per_task"].items())
        + f" of {len(result['clips'])} sites. "
        "Privacy: worst-case attacker cMAP on video features (lower is more private); tasks: "
        "val / test. Chosen on validation: the lowest val privacy among fits whose every task "
        "is within its allowed drop ("
        + ", ".join(f"{t} {d:g}" for t, d in result["allowed_drops"].items())
        + ") of raw.",
        "",
        "| features | privacy val / test (attacker) | "
        + " | ".join(tasks)
        + " | within the drops |",
        "|---|---|" + "---|" * len(tasks) + "---|",
    ]

    def row(name: str, entry: dict[str, Any], within: str) -> str:
        cells = " | ".join(
            f"{entry['tasks'][t]['val']:.2f} / {entry['tasks'][t]['test']:.2f}" for t in tasks
        )
        privacy = f"{entry['privacy_val']:.2f} / {entry['privacy_test']:.2f} ({entry['attacker']})"
        return f"| {name} | {privacy} | {cells} | {within} |"

    lines.append(row("raw", result["baseline"], ""))
    for index, fit in enumerate(result["fits"]):
        name = f"shrinkage {fit['shrinkage']:g}"
        if index == result["selected"]:
            name = f"**{name} (chosen)**"
        lines.append(
            row(name, fit, "yes" if fit["qualifies"] else f"no ({fit['shortfall']:.2f} short)")
        )
    lines += ["", f"Chance cMAP: {result['baseline']['chance']:.2f}."]
    return "\n".join(lines) + "\n"
