"""How readable each task's released videos are, not only the action videos the headline
attacks.

A run's headline privacy (common.evaluation) attacks the central videos of
`evaluation.privacy_videos` (the AR videos), but a deployment releases the features of every
video it anonymizes: the long TAD and AD videos too. This attacks all of them. The attacker
knows the encoder and the adapter, so it makes labelled data of every kind: each attacker of
the suite trains on the train videos of every task whose videos carry their actors'
attributes (the mean of a video's anonymized clip features, as the headline reads a video),
is chosen and stopped on all of their val videos, and is scored, once fitted, on the test
videos of each task alone and of all of them together. The worst case over the suite is
reported per test set, on the raw features and on each run's shipped adapter, all on the same
videos.

    latentveil task-privacy runs/a runs/b --out runs/task-privacy
    -> runs/task-privacy/task_privacy.md (a table), task_privacy.json
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from common.atomic import check_output_folder
from common.attackers import AttackData, AttackResult, Split, run_attacker_on, worst_case
from common.config import EvaluationConfig, RunConfig
from common.evaluation import SPLITS, EvaluationSet, anonymize_sequences, suite_settings
from common.evaluation import video_attack_features as mean_clip
from simulations.crossfit import CrossfitError, load_runs, write_result

ALL = "all"  # the test set of every attacked task's test videos


def attacked_tasks(evaluation_set: EvaluationSet, tasks: Sequence[str] | None) -> list[str]:
    """The tasks whose videos are attacked: `tasks` (None: every task whose videos carry their
    actors' attributes), each checked to have such videos in every split."""
    known = evaluation_set.tasks
    with_actors = [
        t for t, v in known.items() if all(v.splits[s].attributes is not None for s in SPLITS)
    ]
    chosen = list(tasks) if tasks is not None else with_actors
    if not chosen:
        raise CrossfitError("the evaluation set has no videos with known actors to attack")
    for task in chosen:
        if task not in known:
            raise CrossfitError(
                f"the evaluation set has no {task!r} videos (it has {', '.join(sorted(known))})"
            )
        if task not in with_actors:
            raise CrossfitError(
                f"the {task!r} videos carry no actor attributes in every split: nothing to "
                f"attack (tasks with them: {', '.join(with_actors) or 'none'})"
            )
    return chosen


def task_privacy_table(
    evaluation_set: EvaluationSet,
    config: EvaluationConfig,
    window: int,
    adapters: dict[str, nn.Module | None],
    tasks: Sequence[str],
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per row (adapter; None = raw) and test set (each task, then all together when there
    are several), the suite's worst case: test cMAP, its attacker, its val cMAP and chance."""
    test_sets = [[t] for t in tasks] + ([list(tasks)] if len(tasks) > 1 else [])
    names = [t[0] if len(t) == 1 else ALL for t in test_sets]
    settings = suite_settings(config)
    cache: dict = {}
    splits = {t: evaluation_set.tasks[t].splits for t in tasks}

    def features(adapter: nn.Module | None) -> dict[str, dict[str, np.ndarray]]:
        return {
            t: {s: mean_clip(anonymize_sequences(adapter, v[s].clips, window)) for s in SPLITS}
            for t, v in splits.items()
        }

    def stack(values: dict[str, dict[str, np.ndarray]], split: str, among: list[str]):
        return np.concatenate([values[t][split] for t in among])

    actors = {t: {s: v[s].attributes for s in SPLITS} for t, v in splits.items()}
    raw = features(None)
    every = list(tasks)
    rows: dict[str, Any] = {}
    for row, adapter in adapters.items():
        released = raw if adapter is None else features(adapter)
        data = AttackData(
            Split(stack(released, "train", every), stack(actors, "train", every)),
            Split(stack(released, "val", every), stack(actors, "val", every)),
            Split(stack(released, "test", every), stack(actors, "test", every)),
            raw_train=stack(raw, "train", every),
            raw_val=stack(raw, "val", every),
            raw_test=stack(raw, "test", every),
        )
        tests = {
            name: Split(stack(released, "test", among), stack(actors, "test", among))
            for name, among in zip(names, test_sets, strict=True)
        }
        by_test: dict[str, dict[str, AttackResult]] = {name: {} for name in names}
        for attacker in config.attackers:
            if progress is not None:
                progress(f"{row}: {attacker}")
            for name, result in run_attacker_on(attacker, data, tests, settings, cache).items():
                by_test[name][attacker] = result
        worst = {name: worst_case(results) for name, results in by_test.items()}
        rows[row] = {
            name: {key: w[key] for key in ("cmap", "attacker", "val_cmap", "chance_cmap")}
            for name, w in worst.items()
        }
    return {
        "tasks": every,
        "test_videos": {
            name: int(sum(len(splits[t]["test"]) for t in among))
            for name, among in zip(names, test_sets, strict=True)
        },
        "train_videos": int(sum(len(splits[t]["train"]) for t in tasks)),
        "val_videos": int(sum(len(splits[t]["val"]) for t in tasks)),
        "attackers": list(config.attackers),
        "rows": rows,
    }


def task_privacy_markdown(result: dict[str, Any]) -> str:
    """One table: per row and test set, the worst-case test cMAP (its attacker)."""
    names = list(result["test_videos"])
    lines = [
        "Worst-case attacker cMAP (lower is more private) on each task's released video "
        f"features: attackers trained on the {result['train_videos']} train videos of "
        f"{', '.join(result['tasks'])}, chosen on their {result['val_videos']} val videos, "
        "scored on each test set.",
        "",
        "| features | "
        + " | ".join(f"{n} ({result['test_videos'][n]} test videos)" for n in names)
        + " |",
        "|---|" + "---|" * len(names),
    ]
    for row, cells in result["rows"].items():
        lines.append(
            f"| {row} | "
            + " | ".join(f"{cells[n]['cmap']:.2f} ({cells[n]['attacker']})" for n in names)
            + " |"
        )
    chance = next(iter(result["rows"].values()))
    lines += [
        "",
        "Chance cMAP: " + ", ".join(f"{n} {chance[n]['chance_cmap']:.2f}" for n in names) + ".",
    ]
    return "\n".join(lines) + "\n"


def _protocol(config: RunConfig) -> tuple:
    """What decides the numbers besides the adapter: the anonymizer window, the suite."""
    e = config.evaluation
    return (config.anonymizer.window, e.attackers, e.attacker_epochs, e.attacker_patience,
            e.attacker_lr, e.batch_size)  # fmt: skip


def write_task_privacy(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    tasks: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Attack every task's released videos on the raw features and each run's shipped adapter
    (the runs must share one evaluation set); write task_privacy.md and .json into `out_dir`."""
    check_output_folder(out_dir)  # before the work; written only at its end
    evaluation_set, config, adapters = load_runs(
        run_dirs, _protocol, "anonymizer.window or the attacker suite's evaluation settings"
    )
    chosen = attacked_tasks(evaluation_set, tasks)
    result = task_privacy_table(
        evaluation_set, config.evaluation, config.anonymizer.window, adapters, chosen, progress
    )
    markdown = task_privacy_markdown(result)
    return write_result(out_dir, "task_privacy", result, markdown, run_dirs, adapters)
