"""The `latentveil` command line: one entry point, one subcommand per job.

Every subcommand is a thin wrapper over a library function that tests call directly. Heavy
modules are imported inside the handlers so that `latentveil --help` stays fast. Errors a user
can cause (common.errors.LatentveilError, a path the system refuses, a flag argparse refuses)
end in one line on stderr, `latentveil COMMAND: error: ...`, and exit code 2; anything else is
a bug and still ends in one line (exit code 1) unless LATENTVEIL_DEBUG=1 asks for the
traceback. tests/simulations/test_mistakes.py holds the corpus of mistakes this is checked on.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from common.errors import LatentveilError

Handler = Callable[[argparse.Namespace], int]


class UsageError(LatentveilError):
    """A command line argparse refuses: an unknown flag, a missing or malformed value."""


class CommandParser(argparse.ArgumentParser):
    """argparse's parser whose mistakes end in one line naming the flag, not the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def package_version() -> str:
    """The installed latentveil's version (what `latentveil --version` prints)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latentveil")
    except PackageNotFoundError:
        return "unknown (not installed; run from a source tree)"


# The embedded default the run commands use without --config (package data, so an installed
# latentveil has it too).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


def path_argument(text: str) -> str:
    """A path on the command line. An empty one (an unset shell variable) is refused instead of
    being taken for the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return text


def add_config_arguments(parser: argparse.ArgumentParser, runs: bool = False) -> None:
    """--config FILE and repeated --set key=value, shared by every subcommand that runs.

    A command that runs the method (`runs`) defaults to the embedded default config,
    simulations/configs/default.yaml; the others to the schema's defaults."""
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG) if runs else None,
        type=path_argument,
        help=f"YAML config file (default: {'the embedded default, ' if runs else ''}"
        f"{'simulations/configs/default.yaml' if runs else 'the schema defaults'})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)",
    )


# ---------------------------------------------------------------------------------------------
# Subcommands


def _config_command(args: argparse.Namespace) -> int:
    import yaml

    from common.config import load_config, save_config, to_dict
    from simulations.simulate import check_runnable

    config = load_config(args.config, args.overrides)
    check_runnable(config)  # what the schema cannot check (the strategy's name)
    if args.out:
        save_config(config, args.out)
        print(f"resolved config written to {args.out}")
    else:
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


def _add_config_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "config",
        help="validate a config with overrides and print (or write) the resolved config",
        description="Load a YAML config, apply --set overrides, check every key and type, and "
        "print the resolved config as YAML (or write it with --out).",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        default=None,
        type=path_argument,
        help="write the resolved config here instead of printing",
    )
    return _config_command


def _world_command(args: argparse.Namespace) -> int:
    from simulations.world import generate_world, load_world

    root = generate_world(
        args.out,
        preset=args.preset,
        sites=args.sites,
        seed=args.seed,
        alpha=args.alpha,
        purpose=args.purpose,
        progress=not args.quiet,
        workers=args.workers,
    )
    counts = {key: value["count"] for key, value in load_world(root).info["datasets"].items()}
    print(f"world ready at {root}: {sum(counts.values())} files in {len(counts)} datasets")
    return 0


def _add_world_parser(subparsers: argparse._SubParsersAction) -> Handler:
    from simulations.world import PRESETS, PURPOSES

    parser = subparsers.add_parser(
        "world",
        help="generate the synthetic camera-site world (videos, stills, manifests)",
        description="Generate (or complete) the synthetic camera-site world: client sites with "
        "their own cameras and non-IID mixes, and a central evaluation world. Running it again "
        "keeps every file whose hash matches and renders only what is missing or damaged.",
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="folder of the world (created if missing)"
    )
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument(
        "--sites", type=int, default=None, help="client sites (the preset's if unset)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--alpha", type=float, default=None, help="Dirichlet concentration of site mixes"
    )
    parser.add_argument("--purpose", default="evaluate", choices=sorted(PURPOSES))
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return _world_command


def _extract_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.config import load_config
    from common.encoders import create_encoder
    from common.features import extract_features, find_videos
    from common.video import VideoError

    overrides = list(args.overrides)
    if args.encoder:
        overrides.append(f"encoder.name={args.encoder}")
    if args.encoder_path is not None:
        overrides.append(f"encoder.path={args.encoder_path}")
    config = load_config(args.config, overrides)
    data = Path(args.data)
    if (data / "world.json").is_file():
        from simulations.world import load_world
        from simulations.worldfeatures import world_items

        items = world_items(load_world(data), args.datasets.split(",") if args.datasets else None)
    else:
        if args.datasets:
            raise FileNotFoundError(
                f"--datasets needs a world folder (with world.json); {data} is not one"
            )
        items = find_videos(data)
    if not items:
        raise FileNotFoundError(f"no videos or images found in {data}")
    encoder = create_encoder(config.encoder)
    print(f"encoding {len(items)} files with {encoder.encoder_id} into {args.out}")
    try:
        skipped = extract_features(
            items,
            encoder,
            args.out,
            config.features,
            progress=not args.quiet,
            on_error="skip" if args.skip_bad else "raise",
            allow_partial=args.allow_partial,
        )
    except VideoError as error:
        raise LatentveilError(
            f"{error}. Finished shards are kept: run again with --skip-bad to leave such files "
            "out (they are listed at the end)"
        ) from error
    _refuse_all_failed(skipped, len(items), args.out)
    for video_id, reason in skipped:
        print(f"skipped {video_id}: {reason}", file=sys.stderr)
    print(f"feature store ready at {args.out} ({len(items) - len(skipped)} files)")
    return 0


def _refuse_all_failed(failed: list[tuple[str, str]], total: int, out: str) -> None:
    """One error line when no file at all could be encoded (the store is left as it was)."""
    if failed and len(failed) == total:
        video_id, reason = failed[0]
        others = f" (and {total - 1} more)" if total > 1 else ""
        raise LatentveilError(
            f"no file could be encoded, nothing was written to {out}: {video_id}: {reason}{others}"
        )


def _add_extract_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "extract",
        help="encode videos once with the frozen encoder into an HDF5 feature store",
        description="Encode every video (and still image) of a folder or a world into an HDF5 "
        "feature store: clip features, evaluation-clip features and static-clip features per "
        "video. Interrupted, it resumes; run on a store it only encodes what is new or changed.",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=path_argument,
        help="a world folder (with world.json) or any folder of videos",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=path_argument,
        help="the feature store (.h5) to create or extend",
    )
    parser.add_argument(
        "--encoder", default=None, help="encoder name (tiny3d, videomae, module); default: config's"
    )
    parser.add_argument(
        "--encoder-path", default=None, help="local weights for the encoder (see encoder.path)"
    )
    parser.add_argument(
        "--datasets", default=None, help="world datasets to encode, e.g. central/privacy,site_00/ar"
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave out undecodable videos instead of stopping"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="encode the frames that decode from a truncated video instead of refusing it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser)
    return _extract_command


def _pretrain_command(args: argparse.Namespace) -> int:
    from simulations.pretrain import PretrainConfig, pretrain_encoder

    chosen = {
        "epochs": args.epochs,
        "frame_size": args.frame_size,
        "seed": args.seed,
        "world_seed": args.world_seed,
    }
    config = PretrainConfig(**{key: value for key, value in chosen.items() if value is not None})
    command = "latentveil pretrain-encoder " + " ".join(sys.argv[2:])
    summary = pretrain_encoder(
        args.world, args.out, config, progress=not args.quiet, command=command
    )
    final = summary["final"]
    print(
        f"tiny3d written to {args.out} (sha256 {summary['sha256']}, {summary['seconds']} s): "
        f"val action top-1 {final['val_action_top1']:.1f}, "
        f"val attribute cMAP {final['val_attribute_cmap']:.1f}"
    )
    return 0


def _add_pretrain_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "pretrain-encoder",
        help="pre-train the built-in tiny3d encoder on a disjoint synthetic world",
        description="Generate the pre-training world (purpose=pretrain, disjoint from client "
        "sites and the central world) if missing, train tiny3d on actions and private attributes, "
        "standardise its output and save the checkpoint with a JSON recipe beside it.",
    )
    parser.add_argument(
        "--world", required=True, type=path_argument, help="folder of the pre-training world"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=path_argument,
        help="checkpoint to write (e.g. common/checkpoints/tiny3d.pt)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs (recipe default if unset)"
    )
    parser.add_argument(
        "--frame-size", type=int, default=None, help="encoder input side (recipe default if unset)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="training seed (recipe default if unset)"
    )
    parser.add_argument("--world-seed", type=int, default=None, help="pre-training world seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return _pretrain_command


def _leakage_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.config import load_config, save_config
    from common.layout import RunLayout
    from common.tasks import get_task
    from simulations.worldfeatures import measure_raw_leakage

    config = load_config(args.config, args.overrides)
    layout = RunLayout(Path(args.out))
    save_config(config, layout.config)
    result = measure_raw_leakage(
        config, layout.world(config.world.dir), layout.root, progress=not args.quiet
    )
    tasks = "".join(
        f"  {task.title} (fresh probe) {result[task.test_key]:.2f} "
        f"+- {result[task.test_key + '_se']:.2f} ({result[task.name + '_num_test']} test videos)\n"
        for task in map(get_task, config.tasks.evaluated)
    )
    print(
        f"raw features of {result['encoder_id']} on the central test splits:\n"
        f"  privacy cMAP, worst attacker on video ({result['privacy_attacker']}) "
        f"{result['privacy_cmap']:.2f} "
        f"(chance {result['privacy_chance_cmap']:.2f}, {result['privacy_cmap_over_chance']:.2f}x)\n"
        f"  privacy cMAP, worst attacker on stills ({result['privacy_stills_attacker']}) "
        f"{result['privacy_stills_cmap']:.2f}\n"
        f"{tasks}"
        f"written to {layout.leakage}"
    )
    return 0


def _add_leakage_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "leakage",
        help="measure how much raw encoder features leak and how useful they are",
        description="Generate the world if missing, extract the central evaluation features and "
        "run the privacy attacker suite (worst-case cMAP, video and stills) and the linear AR "
        "probe (top-1) on RAW features, with "
        "model selection on val and numbers on test. Writes OUT/leakage.json.",
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="folder for features and leakage.json"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, runs=True)
    return _leakage_command


def _simulate_command(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from common.config import load_config
    from common.layout import RunLayout
    from simulations.simulate import (
        SimulationError,
        check_run_folder,
        check_runnable,
        extend_run,
        simulate,
    )

    out = Path(args.out)
    layout = RunLayout(out)
    if args.extend_to is not None:  # goes on with more rounds: a resume, of a finished run too
        if args.overwrite:
            raise SimulationError(
                "--extend-to continues a run and --overwrite starts over: pick one"
            )
        args.resume = True
    # A new run's config is checked whole before --overwrite removes anything: a typo must not
    # cost the run it was meant to replace.
    config = None if args.resume else load_config(args.config, args.overrides)
    if config is not None:
        check_runnable(config)
    # With --resume, a --config or --set that changes nothing is harmless; one that changes the
    # run's config is refused (check_run_folder).
    explicit = Path(args.config).resolve() != DEFAULT_CONFIG or bool(args.overrides)
    config_given = explicit
    if args.resume:
        config_given = False
        if explicit and layout.config.is_file():
            wanted, own = load_config(args.config, args.overrides), load_config(layout.config)
            config_given = wanted != own
    if config_given and args.extend_to is not None:
        raise SimulationError(
            f"--extend-to trains the run in {out} on with its own config.yaml; --config and "
            "--set cannot change it (start a new run folder, or --overwrite this one)"
        )
    if config_given and args.resume:
        rounds = wanted.federation.rounds
        same_rounds = replace(wanted.federation, rounds=own.federation.rounds)
        if rounds > own.federation.rounds and replace(wanted, federation=same_rounds) == own:
            raise SimulationError(
                f"--resume continues {out} with its own {own.federation.rounds} rounds; to "
                f"train it on to {wanted.federation.rounds}, use --extend-to "
                f"{wanted.federation.rounds} instead of --config or --set"
            )
    state = check_run_folder(out, args.resume, args.overwrite, bool(config_given))
    if args.extend_to is not None:
        config, state = extend_run(out, args.extend_to), "resume"
    if state == "finished":
        print(f"{out} is a finished run; its report is unchanged")
        report = layout.report_json
    else:
        if config is None:
            config = load_config(layout.config, args.overrides)
        started = time.time()
        report = simulate(
            config,
            out,
            resume=args.resume,
            progress=not args.quiet,
            extending=args.extend_to is not None,
        )
    try:
        summary = json.loads(report.read_text())
        base, anon = summary["baseline"], summary["anonymized"]
        tasks = "".join(
            f"; {task['title']} {base[task['metric']]:.2f} -> {anon[task['metric']]:.2f} "
            f"(+- {anon[task['metric'] + '_se']:.2f})"
            for task in summary["tasks"].values()
        )
        privacy = (
            f"privacy cMAP, worst attacker on video {base['privacy_cmap']:.2f} -> "
            f"{anon['privacy_cmap']:.2f} ({anon['privacy_attacker']}; "
            f"{100 * summary['privacy_reduction_rel']:.1f}% lower; "
            f"chance {summary['privacy_chance_cmap']:.2f}){tasks}"
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SimulationError(
            f"{report} is not a readable report ({type(error).__name__}: {error}); it was "
            "changed or cut short: start the run over with --overwrite"
        ) from error
    print(
        f"{privacy}\n"
        f"report: {report}" + (f" ({time.time() - started:.0f} s)" if state != "finished" else "")
    )
    return 0


def _add_simulate_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "simulate",
        help="the main job: federated SPLAVU over simulated camera sites, central evaluation",
        description="Generate the world if missing, extract features per site, run Flower's "
        "Simulation Engine with one SuperNode per site (or, with --set federation.mode="
        "centralized, the same training on pooled data), evaluate centrally and write "
        "OUT/report.json, report.md and plots.",
    )
    parser.add_argument("--out", required=True, type=path_argument, help="the run folder")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete round, with its own config",
    )
    parser.add_argument(
        "--extend-to",
        type=int,
        default=None,
        metavar="ROUNDS",
        help="train the run in --out (finished or not) on to ROUNDS rounds in all, with its own "
        "config otherwise; its rounds, evaluations and selection so far are kept (its old last "
        "round stays evaluated, so the selection may keep it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a run folder that holds a run (its world and features are kept)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, runs=True)
    return _simulate_command


def _prepare_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.config import load_config, save_config
    from common.layout import RunLayout
    from simulations.simulate import check_run_folder, check_runnable, flwr_command, prepare_run

    config = load_config(args.config, args.overrides)
    check_runnable(config)  # `flwr run` would find an unknown strategy only after preparing
    out = Path(args.out)
    check_run_folder(out, resume=False, overwrite=False, config_given=True)  # never over a run
    save_config(config, RunLayout(out).config)
    prepare_run(config, out, progress=not args.quiet)
    print(
        f"run folder ready at {out}; Flower's own command trains on it:\n"
        + flwr_command(config, out)
    )
    return 0


def _add_prepare_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "prepare",
        help="prepare a run folder (world, features, evaluation set) for `flwr run .`",
        description="Everything `simulate` does before training: generate the world if missing, "
        "extract the central evaluation set and each site's features, write sites.json.",
    )
    parser.add_argument("--out", required=True, type=path_argument, help="the run folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, runs=True)
    return _prepare_command


def _show_table(table: Path, beside: str) -> None:
    """Print a written table, then where it is and what was written `beside` it."""
    print(table.read_text(), end="")
    print(f"written to {table} (and {beside} beside it)")


def _progress_lines(args: argparse.Namespace, verb: str) -> Callable[[str], None]:
    """A progress callback: '<verb> <what>' on stderr, unless --quiet."""

    def progress(what: str) -> None:
        if not args.quiet:
            print(f"{verb} {what}", file=sys.stderr, flush=True)

    return progress


def _frontier_command(args: argparse.Namespace) -> int:
    from server.frontier import write_frontier

    table = write_frontier(args.runs, args.out)
    _show_table(table, "frontier.json, frontier.png")
    return 0


def _add_frontier_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "frontier",
        help="the privacy-utility frontier of several runs (one point per run folder)",
        description="Read each run folder's report.json and write a table, JSON and a plot of "
        "worst-case video cMAP against AR top-1 (the selected round of each run).",
    )
    parser.add_argument(
        "runs", nargs="+", type=path_argument, help="run folders written by `latentveil simulate`"
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="folder for frontier.md/.json/.png"
    )
    return _frontier_command


def _crossfit_command(args: argparse.Namespace) -> int:
    from simulations.crossfit import CrossfitError, write_crossfit

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        sizes = [int(s) for s in args.train_sizes.split(",") if s.strip()]
    except ValueError as error:
        raise CrossfitError(f"--train-sizes takes comma-separated integers: {error}") from error
    if not tasks or not sizes:
        raise CrossfitError("--tasks and --train-sizes each need at least one value")

    progress = _progress_lines(args, "cross-fitting")
    table = write_crossfit(
        args.runs, args.out, tasks, sizes, args.folds, args.val_size, args.seed, progress
    )
    _show_table(table, "crossfit.json")
    return 0


def _task_privacy_command(args: argparse.Namespace) -> int:
    from simulations.task_privacy import write_task_privacy

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    table = write_task_privacy(args.runs, args.out, tasks, _progress_lines(args, "attacking"))
    _show_table(table, "task_privacy.json")
    return 0


def _add_task_privacy_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "task-privacy",
        help="how readable each task's released videos (AR, TAD, AD) are to the attacker suite",
        description="Train the attacker suite on the central train videos of every task whose "
        "videos carry their actors' attributes, choose it on their val videos, and score it on "
        "each task's test videos and on all of them, on the raw features and each run's "
        "shipped adapter; write task_privacy.md and .json.",
    )
    parser.add_argument(
        "runs", nargs="+", type=path_argument, help="finished run folders of one world"
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="folder for task_privacy.md"
    )
    parser.add_argument(
        "--tasks", default="", help="comma-separated (default: every task with known actors)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return _task_privacy_command


def _discriminant_command(args: argparse.Namespace) -> int:
    from simulations.discriminant import DiscriminantError, write_discriminant

    try:
        shrinkages = [float(s) for s in args.shrinkage.split(",") if s.strip()]
    except ValueError:
        raise DiscriminantError(
            f"--shrinkage takes comma-separated numbers in [0, 1], got {args.shrinkage!r}"
        ) from None
    progress = _progress_lines(args, "evaluating")
    tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    table = write_discriminant(
        args.run, args.out, args.directions, shrinkages, tasks=tasks, progress=progress
    )
    _show_table(table, "discriminant.json, config.yaml, evaluation_set.npz, adapter.npz")
    return 0


def _add_discriminant_parser(subparsers: argparse._SubParsersAction) -> Handler:
    from simulations.discriminant import SHRINKAGES

    parser = subparsers.add_parser(
        "discriminant",
        help="the closed-form anonymizer: the linear discriminant projection of the sites' "
        "action-labelled clips, measured like a run",
        description="Sum each simulated site's moments of its training clips that show an "
        "action (AR's clips, TAD's clips inside a segment), fit the "
        "linear discriminant projection for each shrinkage, evaluate each with the run's "
        "central protocol, choose on validation by the run's rule, and write "
        "discriminant.md and .json with a run-like folder (config.yaml, evaluation_set.npz, "
        "adapter.npz) that task-privacy, crossfit and export read.",
    )
    parser.add_argument(
        "run", type=path_argument, help="a prepared or finished run folder (its sites' stores)"
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="folder for discriminant.md"
    )
    parser.add_argument(
        "--directions",
        type=int,
        default=None,
        help="directions kept (default: the number of action classes minus one)",
    )
    parser.add_argument(
        "--shrinkage",
        default=",".join(f"{s:g}" for s in SHRINKAGES),
        help="comma-separated shrinkages of the within-action covariance to choose among "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated tasks whose videos' action labels the fit reads (default: the "
        "tasks the run trains, as its own anonymizer.init discriminant would; ar,tad or ar)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return _discriminant_command


def _seeds_command(args: argparse.Namespace) -> int:
    from server.seeds import SeedsError, write_seeds

    groups = []
    for group in args.group:
        if len(group) < 2:
            raise SeedsError(f"--group {group[0]} needs at least one run folder after its name")
        if any(not run.strip() for run in group[1:]):
            raise SeedsError(f"--group {group[0]} has an empty run folder (an unset variable?)")
        groups.append((group[0], group[1:]))
    within = {}
    for item in [i.strip() for i in args.within.split(",") if i.strip()]:
        task, _, drop = item.partition("=")
        try:
            within[task.strip()] = float(drop)
            if not math.isfinite(within[task.strip()]):
                raise ValueError(drop)
        except ValueError as error:
            raise SeedsError(
                f"--within takes TASK=POINTS pairs, e.g. ad=5: not {item!r}"
            ) from error
    table = write_seeds(groups, args.out, within)
    _show_table(table, "seeds.json, seeds.png")
    return 0


def _add_seeds_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "seeds",
        help="several seeds of one or more settings: per seed, mean ± standard error, paired",
        description="Read each run folder's report.json and config.yaml (runs of one world and "
        "one set of features) and write, per setting, every seed's privacy and task changes "
        "from raw, their mean and standard error, how many seeds keep each task within its "
        "allowed drop, and each setting minus the first paired on their shared seeds "
        "(seeds.md, seeds.json, seeds.png).",
    )
    parser.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar="NAME RUN",
        help="a setting's name, then its run folders, one per seed (repeat for each setting; "
        "the first is the one the others are paired with)",
    )
    parser.add_argument("--out", required=True, type=path_argument, help="folder for seeds.md")
    parser.add_argument(
        "--within",
        default="",
        help="allowed drops in points that override the runs' tasks.evaluated, e.g. tad=5,ad=5",
    )
    return _seeds_command


def _add_crossfit_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "crossfit",
        help="how much the TAD/AD central scores move with the videos that train the heads",
        description="Pool each task's central videos, cut them into folds, score every fold "
        "once as test with the task's own protocol (heads trained and chosen on other videos), "
        "on the raw features and each run's shipped adapter; write crossfit.md and .json.",
    )
    parser.add_argument(
        "runs", nargs="+", type=path_argument, help="finished run folders of one world"
    )
    parser.add_argument("--out", required=True, type=path_argument, help="folder for crossfit.md")
    parser.add_argument("--tasks", default="tad,ad", help="comma-separated (default tad,ad)")
    parser.add_argument(
        "--train-sizes", default="32,96", help="training videos per fold (default 32,96)"
    )
    parser.add_argument("--folds", type=int, default=4, help="test folds (default 4)")
    parser.add_argument("--val-size", type=int, default=48, help="validation videos (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="how the folds are drawn (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return _crossfit_command


def _ablate_command(args: argparse.Namespace) -> int:
    from common.config import load_config
    from simulations.ablate import run_ablation

    config = load_config(args.config, args.overrides)
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    table = run_ablation(config, args.out, args.seen, variants, progress=not args.quiet)
    _show_table(table, "ablation.json, ablation.png")
    return 0


def _add_ablate_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "ablate",
        help="generalisation and loss ablations: all tasks seen, one task seen, no L_LC, ...",
        description="Run the variants of simulations/ablate.py (all_seen, ar_only from the "
        "config's start; all_seen_random, ar_only_random from the seeded random adapter when "
        "the config starts elsewhere; ar_only_videos, no_lc, no_budget, paper_weights from the "
        "random adapter) on the same world and features, and write OUT/ablation.md, "
        "ablation.json and ablation.png: each variant's privacy and every evaluated task.",
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="folder for the runs and the table"
    )
    parser.add_argument(
        "--seen", default="ar", help="the task the one-task variants train (default ar)"
    )
    parser.add_argument(
        "--variants", default="", help="comma-separated subset of the variants (default all)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, runs=True)
    return _ablate_command


def _export_command(args: argparse.Namespace) -> int:
    from edge_export.artifact import (
        export_artifact,
        source_from_run,
        swap_adapter,
        verify_artifact,
    )

    if args.verify:
        checks = verify_artifact(args.verify)
        for part, check in checks.items():
            print(
                f"{part}: max abs difference {check['max_abs']:.3g}, least cosine "
                f"{check['cosine_min']:.6f}: {'ok' if check['passed'] else 'FAILED'}"
            )
        failed = [part for part, check in checks.items() if not check["passed"]]
        if failed:
            print(f"latentveil export: {args.verify} fails its parity check here", file=sys.stderr)
            return 1
        print(f"{args.verify} passes its parity check on this machine")
        return 0
    if not args.run:
        raise LatentveilError("export needs --run RUN_DIR (or --verify ARTIFACT)")
    if args.swap and args.encoder_only:
        raise LatentveilError("--swap puts the run's adapter into an artifact: drop --encoder-only")
    source = source_from_run(args.run, with_adapter=not args.encoder_only)
    if args.swap:
        metadata = swap_adapter(args.swap, source)
        print(
            f"swapped adapter {metadata['adapter']['adapter_hash']} into {args.swap} in "
            f"{metadata['swap_seconds']:.1f} s (encoder part untouched)"
        )
        return 0
    if not args.out:
        raise LatentveilError("export needs --out ARTIFACT_DIR")
    started = time.perf_counter()
    metadata = export_artifact(
        source, args.backend, args.out, args.precision, args.max_batch, overwrite=args.overwrite
    )
    for part, check in metadata["parity"]["checks"].items():
        print(
            f"parity {part}: max abs difference {check['max_abs']:.3g}, least cosine "
            f"{check['cosine_min']:.6f}"
        )
    print(
        f"{args.backend} {args.precision} artifact at {args.out} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


def _add_export_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "export",
        help="export a run's encoder + adapter as an edge artifact (torch, onnx, openvino, "
        "tensorrt), parity-checked against eager PyTorch",
        description="Export the frozen encoder and the adapter a run shipped (adapter.npz) as "
        "an artifact folder for one backend, with dynamic batch and clip count. The artifact "
        "is written only if its outputs match eager PyTorch on a fixed input. --verify repeats "
        "that check on this machine; --swap puts a run's adapter into an existing artifact "
        "without rebuilding its encoder part.",
    )
    parser.add_argument(
        "--run", default=None, type=path_argument, help="the run folder to export from"
    )
    parser.add_argument(
        "--backend", default="onnx", help="torch, onnx (default), openvino or tensorrt"
    )
    parser.add_argument("--precision", default="fp32", help="fp32, int8 (onnx), fp16 (tensorrt)")
    parser.add_argument(
        "--out", default=None, type=path_argument, help="the artifact folder to write"
    )
    parser.add_argument(
        "--max-batch", type=int, default=64, help="largest batch of windows (default 64)"
    )
    parser.add_argument(
        "--encoder-only", action="store_true", help="only the encoder part (what a site runs)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--verify",
        default=None,
        type=path_argument,
        metavar="ARTIFACT",
        help="re-check an artifact",
    )
    parser.add_argument(
        "--swap",
        default=None,
        type=path_argument,
        metavar="ARTIFACT",
        help="swap --run's adapter into ARTIFACT",
    )
    return _export_command


def _anonymize_command(args: argparse.Namespace) -> int:
    from edge_export.anonymize import anonymize_videos, collect_videos
    from edge_export.artifact import load_artifact

    runtime = load_artifact(args.artifact)
    items = collect_videos(args.inputs)
    what = "raw features" if args.raw else f"anonymized features (adapter {runtime.adapter_hash})"
    print(f"{len(items)} files -> {what} with the {runtime.backend} artifact into {args.out}")
    skipped = anonymize_videos(
        items,
        runtime,
        args.out,
        window=args.window,
        raw=args.raw,
        allow_partial=args.allow_partial,
        progress=not args.quiet,
    )
    _refuse_all_failed(skipped, len(items), args.out)
    print(f"{args.out}: {len(items) - len(skipped)} of {len(items)} files written")
    if skipped:
        print(f"latentveil anonymize: {len(skipped)} files failed:", file=sys.stderr)
        for video_id, reason in skipped:
            print(f"  {video_id}: {reason}", file=sys.stderr)
        return 1
    return 0


def _add_anonymize_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "anonymize",
        help="videos in, anonymized clip features out, through an edge artifact",
        description="Decode videos, encode their non-overlapping clips with the artifact's "
        "encoder and anonymize each video's clips in windows with its adapter; write a feature "
        "store marked with the adapter hash and backend. Resumable; a file that cannot be read "
        "is reported and skipped, and the command then exits with code 1.",
    )
    parser.add_argument("inputs", nargs="+", type=path_argument, metavar="VIDEO_OR_DIR")
    parser.add_argument(
        "--artifact", required=True, type=path_argument, help="an artifact folder from `export`"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=path_argument,
        help="the feature store (.h5) to write or extend",
    )
    parser.add_argument(
        "--window", type=int, default=None, help="clips per anonymized window (artifact's)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="write the encoder's raw features, not anonymized"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="encode the frames that decode from a truncated video instead of skipping it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return _anonymize_command


def _deploy_local_command(args: argparse.Namespace) -> int:
    from common.config import load_config
    from common.layout import RunLayout
    from simulations.deploy import SiteEvent, deploy_local
    from simulations.simulate import SimulationError, check_run_folder

    out = Path(args.out)
    layout = RunLayout(out)
    config = None if args.resume else load_config(args.config, args.overrides)
    explicit = Path(args.config).resolve() != DEFAULT_CONFIG or bool(args.overrides)
    state = check_run_folder(
        out, args.resume, args.overwrite, bool(explicit) if not args.resume else False
    )
    if state == "finished":
        print(f"{out} is a finished run; its report is unchanged")
        return 0
    if config is None:
        config = load_config(layout.config)
        if args.sites is not None and args.sites != config.world.sites:
            raise SimulationError(
                f"--resume continues {out} with its {config.world.sites} sites, not --sites "
                f"{args.sites}"
            )
    started = time.time()
    report = deploy_local(
        config,
        out,
        args.sites,
        args.insecure,
        progress=not args.quiet,
        kill=tuple(SiteEvent.parse(text) for text in args.kill_site),
        rejoin=tuple(SiteEvent.parse(text) for text in args.rejoin_site),
        resume=args.resume,
        superlink_db=args.superlink_db,
        isolation=args.isolation,
    )
    summary = json.loads(report.read_text())
    base, anon = summary["baseline"], summary["anonymized"]
    print(
        f"privacy cMAP, worst attacker on video {base['privacy_cmap']:.2f} -> "
        f"{anon['privacy_cmap']:.2f}\nreport: {report} ({time.time() - started:.0f} s)"
    )
    return 0


def _add_deploy_local_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "deploy-local",
        help="the federation on Flower's Deployment Engine: a real SuperLink and one SuperNode "
        "per site on this machine",
        description="Prepare the run folder (world, central evaluation set; each site encodes "
        "its own videos), start a flower-superlink and one flower-supernode per site on "
        "127.0.0.1, run the app with `flwr run`, stop every process it started, and write the "
        "same report as `simulate`. Logs in OUT/deploy/.",
    )
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--sites", type=int, default=None, help="sites (default: world.sites)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no SuperNode authentication (default: both, keys in OUT/deploy/certs)",
    )
    parser.add_argument(
        "--kill-site",
        action="append",
        default=[],
        metavar="SITE@ROUND",
        help="SIGKILL that site's SuperNode as round ROUND begins (a dropout drill; repeatable)",
    )
    parser.add_argument(
        "--rejoin-site",
        action="append",
        default=[],
        metavar="SITE@ROUND",
        help="start a killed site's SuperNode again as round ROUND begins (repeatable)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --out's run from its last complete round (after a server stop)",
    )
    parser.add_argument(
        "--superlink-db",
        action="store_true",
        help="keep the SuperLink's state in OUT/deploy/superlink.db (default: in memory; "
        "see docs/deployment.md for why)",
    )
    parser.add_argument(
        "--isolation",
        choices=("process", "subprocess"),  # simulations.deploy.ISOLATIONS
        default="process",
        help="how a site runs its messages: 'process' (default), one long-lived executor per "
        "SuperNode (client.executor, `flower-supernode --isolation process`); 'subprocess', "
        "Flower's default, a new ClientApp process per message handing it to the site's worker",
    )
    parser.add_argument("--overwrite", action="store_true", help="start over in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, runs=True)
    return _deploy_local_command


def _certs_command(args: argparse.Namespace) -> int:
    from simulations.certs import make_certificates

    sites = [f"site_{i:02d}" for i in range(args.sites)]
    certificates = make_certificates(args.out, args.hosts, sites)
    print(
        f"CA, SuperLink certificate for {', '.join(args.hosts)} and {args.sites} site key pairs "
        f"in {certificates.folder}; register each site with `flwr supernode register "
        f"{certificates.site_public_key('site_00')} CONNECTION`"
    )
    return 0


def _add_certs_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "certs",
        help="a CA, the SuperLink's TLS certificate and one key pair per site",
        description="Make the keys and certificates of a secured deployment (see "
        "docs/deployment.md): ca.crt/ca.key, superlink.crt/superlink.key with the hosts as "
        "subject alternative names, and site_NN.key/site_NN.pub (OpenSSH EC P-384) per site.",
    )
    parser.add_argument("--out", required=True, help="the folder to write (must not hold keys)")
    parser.add_argument(
        "--hosts", nargs="+", required=True, help="names and addresses of the SuperLink"
    )
    parser.add_argument("--sites", type=int, required=True, help="how many site key pairs")
    return _certs_command


def _store_command(args: argparse.Namespace) -> int:
    from common.features import FeatureStore, export_npy

    with FeatureStore(args.store) as store:
        settings = store.settings
        ids = store.video_ids()
        clips = [store.clip_features(v).shape[0] for v in ids]
    print(f"{args.store}: {len(ids)} videos, {sum(clips)} clip features", end="")
    print(f" ({min(clips)}-{max(clips)} per video)" if clips else "")
    for name, value in settings.__dict__.items():
        shown = value if value != "" else "(raw features)" if name == "anonymized" else '""'
        print(f"  {name}: {shown}")
    if args.list:
        for video_id, count in zip(ids, clips, strict=True):
            print(f"  {video_id}: {count} clips")
    if args.export_npy:
        written = export_npy(args.store, args.export_npy, args.kind)
        print(f"wrote {written} files <video_id>.npy ({args.kind}) to {args.export_npy}")
    return 0


def _add_store_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "store",
        help="inspect a feature store (settings, videos, clips) and export it as .npy files",
        description="Print what a feature store written by `extract` or `anonymize` holds: the "
        "encoder, clip settings, dtype, backend, whether the features are anonymized (and by "
        "which adapter), and how many videos and clips; optionally export each video's "
        "features as <video_id>.npy.",
    )
    parser.add_argument("store", help="the feature store (.h5)")
    parser.add_argument("--list", action="store_true", help="one line per video")
    parser.add_argument("--export-npy", default=None, metavar="DIR", help="write .npy files here")
    parser.add_argument(
        "--kind",
        default="clip_features",
        choices=["clip_features", "eval_clip_features", "static_features"],
        help="which features --export-npy writes",
    )
    return _store_command


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], Handler]] = [
    _add_config_parser,
    _add_world_parser,
    _add_extract_parser,
    _add_store_parser,
    _add_pretrain_parser,
    _add_leakage_parser,
    _add_prepare_parser,
    _add_simulate_parser,
    _add_deploy_local_parser,
    _add_certs_parser,
    _add_frontier_parser,
    _add_seeds_parser,
    _add_crossfit_parser,
    _add_task_privacy_parser,
    _add_discriminant_parser,
    _add_ablate_parser,
    _add_export_parser,
    _add_anonymize_parser,
]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The argument parser and a handler per subcommand name."""
    parser = CommandParser(
        prog="latentveil",
        description="Federated latent anonymization for video (SPLAVU on Flower).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    for add in SUBCOMMANDS:
        before = set(subparsers.choices)
        handler = add(subparsers)
        (name,) = set(subparsers.choices) - before
        handlers[name] = handler
    return parser, handlers


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; an unknown flag is named with the closest one the command has,
    or with the command it belongs to."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = parser if args.command is None else _subparser(parser, args.command)
        flag = unknown[0].split("=", 1)[0]
        close = difflib.get_close_matches(flag, _flags(command), n=1, cutoff=0.7)
        owners = [
            name
            for name, other in _subparser(parser, None).items()
            if other is not command and flag in _flags(other)
        ]
        hint = (
            f"; did you mean {close[0]}?"
            if close
            else f"; {flag} is a flag of `latentveil {owners[0]}`"
            if owners
            else ""
        )
        raise UsageError(
            f"unrecognized argument{'s' * (len(unknown) > 1)} {' '.join(unknown)}{hint} "
            f"(see `{command.prog} --help`)"
        )
    return args


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> Any:
    """The parser of subcommand `name` (all of them by name when `name` is None)."""
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices if name is None else subparsers.choices[name]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `latentveil` command line; returns the process exit code."""
    parser, handlers = build_parser()
    try:
        args = _parse(parser, argv)
    except UsageError as error:
        # The subcommand the line names, if any (argparse stops before it returns one).
        words = sys.argv[1:] if argv is None else list(argv)
        command = next((f" {word}" for word in words if word in handlers), "")
        print(f"latentveil{command}: error: {error}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except (LatentveilError, OSError) as error:
        # OSError: a missing, unwritable or wrong kind of path (a file where a folder goes...)
        print(f"latentveil {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentveil {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, or a mistake no check catches yet: still one line
        if os.environ.get("LATENTVEIL_DEBUG"):
            raise
        print(
            f"latentveil {args.command}: error: {type(error).__name__}: {_one_line(error)} "
            "(LATENTVEIL_DEBUG=1 shows the traceback; please report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(error: BaseException) -> str:
    """An error's message on one line (an OSError with its path, as `str` gives it)."""
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
