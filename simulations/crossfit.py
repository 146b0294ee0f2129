"""How much a task's central score depends on which of its videos train the fresh head.

The central protocol (common.evaluation) scores a task once: a fresh head trained on the
train split, chosen on val, scored on test. Its standard error resamples the test videos with
that head held fixed, so it leaves out how the score moves with the videos the head learned
from and was chosen on. This re-scores a task by cross-fitting: the task's central videos of
all three splits are pooled and cut into K folds (each kind of video, anomalous or normal,
spread evenly when the task's labels say which); each fold is scored once as test, by the
task's own protocol with a head trained on `train_size` of the other videos and chosen on
`val_size` of them. Per train size it reports each fold's score and their mean, on the raw
features and on each run's shipped adapter, all on the same folds.

    latentveil crossfit runs/a runs/b --out runs/crossfit [--tasks tad,ad] [--train-sizes 32,96]
    -> runs/crossfit/crossfit.md (a table), crossfit.json
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from common.atomic import atomic_write_text, check_output_folder, file_sha256, output_folder
from common.config import EvaluationConfig, RunConfig
from common.errors import LatentveilError
from common.evaluation import SPLITS, EvaluationSet, anonymize_sequences
from common.layout import RunLayout
from common.tasks import TaskSplit, get_task
from edge_export.artifact import adapter_from_run, run_config

# The central protocol's sizes in the default world (simulations.world.presets): heads trained
# on 96 videos and chosen on 48; 32 is world version 2's training split, for comparison. The CLI
# spells them out in its flags' defaults (it imports this module only when the command runs).
TRAIN_SIZES = (32, 96)
VAL_SIZE = 48


class CrossfitError(LatentveilError):
    """Folds that cannot be cut, or runs that cannot be compared."""


@dataclass(frozen=True)
class Fold:
    """Indices into a task's pooled videos (train, then val, then test split order)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def cut_folds(
    labels: dict[str, np.ndarray], folds: int, train_size: int, val_size: int, seed: int = 0
) -> list[Fold]:
    """`folds` disjoint test folds covering every video once; fold f is chosen on the first
    `val_size` videos of fold f+1 and trained on `train_size` of the rest. With an `anomalous`
    label, each fold, validation set and training set holds both kinds in proportion."""
    n = len(next(iter(labels.values())))
    if folds < 2:
        raise CrossfitError(f"cross-fitting needs at least 2 folds, not {folds}")
    kinds = (
        np.asarray(labels["anomalous"]).astype(bool)
        if "anomalous" in labels
        else np.zeros(n, dtype=bool)
    )
    if val_size < 1 or train_size < 1:
        raise CrossfitError(
            f"the validation and training sets need at least 1 video each, not {val_size} "
            f"and {train_size}"
        )
    fewest = min(int(kinds.sum()), int((~kinds).sum())) if kinds.any() else n
    if fewest < folds:
        raise CrossfitError(
            f"{folds} folds need at least {folds} videos of each kind; there are {fewest}"
        )
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(np.flatnonzero(kinds == kind)) for kind in (True, False)]
    parts = [_interleaved([s[f::folds] for s in shuffled]) for f in range(folds)]
    smallest_rest = n - max(len(p) for p in parts) - val_size
    if val_size > min(len(p) for p in parts):
        raise CrossfitError(
            f"a validation set of {val_size} videos does not fit in a fold of "
            f"{min(len(p) for p in parts)} ({n} videos in {folds} folds)"
        )
    if train_size > smallest_rest:
        raise CrossfitError(
            f"{train_size} training videos do not fit: {n} videos in {folds} folds leave "
            f"{smallest_rest} beside a test fold and {val_size} validation videos"
        )
    out = []
    for f in range(folds):
        test, val = parts[f], parts[(f + 1) % folds][:val_size]
        rest = np.setdiff1d(np.arange(n), np.concatenate([test, val]))
        draw = np.random.default_rng([seed, f])
        # Both kinds in the training set in their share of the rest (at least one each).
        of_kind = [draw.permutation(rest[kinds[rest] == kind]) for kind in (True, False)]
        if of_kind[0].size and of_kind[1].size:
            first = round(train_size * of_kind[0].size / rest.size)
            first = min(max(first, 1), train_size - 1, of_kind[0].size)
            train = np.concatenate([of_kind[0][:first], of_kind[1][: train_size - first]])
        else:
            train = np.concatenate(of_kind)[:train_size]
        out.append(Fold(np.sort(train), np.sort(val), np.sort(test)))
    return out


def _interleaved(groups: list[np.ndarray]) -> np.ndarray:
    """The groups' items merged so that every prefix holds each group in about its share."""
    items = np.concatenate(groups)
    keys = np.concatenate([(np.arange(len(g)) + 0.5) / len(g) for g in groups if len(g)])
    return items[np.argsort(keys, kind="stable")]


def _take(labels: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    """The labels of the videos at `indices`."""
    return {k: v[indices] for k, v in labels.items()}


def crossfit_scores(
    task_name: str,
    clips: np.ndarray,
    labels: dict[str, np.ndarray],
    classes: tuple[str, ...],
    config: EvaluationConfig,
    folds: list[Fold],
) -> list[float]:
    """The task's central test score on each fold ((N, C, d) pooled clips and their labels)."""
    task = get_task(task_name)

    def split(indices: np.ndarray) -> TaskSplit:
        return TaskSplit(clips[indices], _take(labels, indices))

    return [
        float(
            task.evaluate(
                {"train": split(f.train), "val": split(f.val), "test": split(f.test)},
                classes,
                config,
            ).test
        )
        for f in folds
    ]


def pooled(evaluation_set: EvaluationSet, task: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A task's central videos of all splits, in split order: clips and labels."""
    if task not in evaluation_set.tasks:
        have = ", ".join(sorted(evaluation_set.tasks))
        raise CrossfitError(f"the evaluation set has no {task!r} videos (it has {have})")
    videos = evaluation_set.tasks[task]
    names = videos.splits["train"].labels
    return (
        np.concatenate([videos.splits[s].clips for s in SPLITS]),
        {k: np.concatenate([videos.splits[s].labels[k] for s in SPLITS]) for k in names},
    )


def crossfit_table(
    evaluation_set: EvaluationSet,
    config: EvaluationConfig,
    window: int,
    adapters: dict[str, nn.Module | None],
    tasks: Sequence[str],
    train_sizes: Sequence[int],
    folds: int = 4,
    val_size: int = VAL_SIZE,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per task and train size: every adapter's fold scores and mean (None = raw features)."""
    result: dict[str, Any] = {"folds": folds, "val_size": val_size, "seed": seed, "tasks": {}}
    # Every task's folds are cut and checked before any head trains.
    plans = {}
    for task in tasks:
        clips, labels = pooled(evaluation_set, task)
        cuts = {size: cut_folds(labels, folds, size, val_size, seed) for size in train_sizes}
        for size, cut in cuts.items():
            for f, fold in enumerate(cut):
                try:
                    get_task(task).check_splits(
                        {s: _take(labels, getattr(fold, s)) for s in SPLITS}
                    )
                except LatentveilError as error:
                    raise CrossfitError(
                        f"{task}, fold {f} with {size} training videos: {error}"
                    ) from error
        plans[task] = (clips, labels, cuts)
    for task, (clips, labels, cuts) in plans.items():
        classes = evaluation_set.tasks[task].classes
        rows: dict[str, Any] = {}
        for name, adapter in adapters.items():
            features = anonymize_sequences(adapter, clips, window)
            rows[name] = {}
            for size, cut in cuts.items():
                if progress is not None:
                    progress(f"{task}, {name}, {size} training videos")
                scores = crossfit_scores(task, features, labels, classes, config, cut)
                rows[name][str(size)] = {"mean": float(np.mean(scores)), "folds": scores}
        result["tasks"][task] = {
            "videos": len(clips),
            "rows": rows,
            "test_folds": [f.test.tolist() for f in next(iter(cuts.values()))],
        }
    return result


def crossfit_markdown(result: dict[str, Any]) -> str:
    """One table per task: the mean over folds per train size, and its change from raw."""
    lines = [
        f"Cross-fitted central task scores: {result['folds']} folds, each scored once as test, "
        f"heads chosen on {result['val_size']} other videos (seed {result['seed']}).",
    ]
    for task, entry in result["tasks"].items():
        sizes = list(next(iter(entry["rows"].values())))
        raw = entry["rows"].get("raw")
        lines += [
            "",
            f"### {task} ({entry['videos']} videos)",
            "",
            "| features | " + " | ".join(f"{s} training videos" for s in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for name, row in entry["rows"].items():
            cells = []
            for s in sizes:
                cell = f"{row[s]['mean']:.2f}"
                if raw is not None and name != "raw":
                    cell += f" ({row[s]['mean'] - raw[s]['mean']:+.2f})"
                cells.append(cell + " [" + ", ".join(f"{v:.1f}" for v in row[s]["folds"]) + "]")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Each cell: mean over folds (change from raw) [each fold's test score]."]
    return "\n".join(lines) + "\n"


def row_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """Each run's row: the fewest trailing path parts that tell the runs apart (and from
    "raw"), e.g. `s0/all_seen` and `s1/all_seen`."""
    parts = [Path(run).resolve().parts for run in run_dirs]
    for k in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names) and "raw" not in names:
            return names
    raise CrossfitError("a run folder is named twice; name each run once")


def load_runs(
    run_dirs: Sequence[str | Path], protocol: Callable[[RunConfig], tuple], differs: str
) -> tuple[EvaluationSet, RunConfig, dict[str, nn.Module | None]]:
    """The shared evaluation set of finished runs, the first run's config and an adapter per
    row ("raw": None, then each run's shipped adapter, named by `row_names`). Refused: runs of
    different evaluation sets, or whose `protocol` (the settings named by `differs`) differ."""
    if not run_dirs:
        raise CrossfitError("name at least one run folder")
    sets = []
    for run in run_dirs:
        path = RunLayout(Path(run)).evaluation_set
        if not path.is_file():
            raise CrossfitError(f"{run} has no {path.name} (not a prepared run folder)")
        sets.append(path)
    digests = {file_sha256(p) for p in sets}
    if len(digests) > 1:
        raise CrossfitError(
            "the runs were evaluated on different evaluation sets (their evaluation_set.npz "
            "differ); compare runs of one world and one set of features"
        )
    evaluation_set = EvaluationSet.load(sets[0])
    config = run_config(run_dirs[0])
    for run in run_dirs[1:]:
        if protocol(run_config(run)) != protocol(config):
            raise CrossfitError(
                f"{run} is measured otherwise than {run_dirs[0]} ({differs} differ); "
                "compare runs of one protocol"
            )
    adapters: dict[str, nn.Module | None] = {"raw": None}
    for name, run in zip(row_names(run_dirs), run_dirs, strict=True):
        adapters[name] = adapter_from_run(run, evaluation_set.dim)
    return evaluation_set, config, adapters


def _protocol(config: RunConfig) -> tuple:
    """What decides a task's score besides the features: the anonymizer window, the heads'
    training."""
    e = config.evaluation
    return config.anonymizer.window, e.probe_epochs, e.probe_lr, e.batch_size


def write_crossfit(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    tasks: Sequence[str] = ("tad", "ad"),
    train_sizes: Sequence[int] = TRAIN_SIZES,
    folds: int = 4,
    val_size: int = VAL_SIZE,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Cross-fit every task on the raw features and each run's shipped adapter (the runs must
    share one evaluation set); write crossfit.md and crossfit.json into `out_dir`."""
    check_output_folder(out_dir)  # before the work; written only at its end
    evaluation_set, config, adapters = load_runs(
        run_dirs, _protocol, "anonymizer.window, evaluation.probe_epochs, probe_lr or batch_size"
    )
    result = crossfit_table(
        evaluation_set, config.evaluation, config.anonymizer.window, adapters,
        tasks, train_sizes, folds, val_size, seed, progress,
    )  # fmt: skip
    return write_result(out_dir, "crossfit", result, crossfit_markdown(result), run_dirs, adapters)


def write_result(
    out_dir: str | Path,
    stem: str,
    result: dict[str, Any],
    markdown: str,
    run_dirs: Sequence[str | Path],
    adapters: dict[str, Any],
) -> Path:
    """Write `result` (with the run folders it measured, by adapter name) as <stem>.json and
    `markdown` as <stem>.md into `out_dir`, each atomically; return the table's path."""
    result["runs"] = dict(zip(list(adapters)[1:], map(str, run_dirs), strict=True))
    out = output_folder(out_dir)
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    table = out / f"{stem}.md"
    atomic_write_text(table, markdown)
    return table
