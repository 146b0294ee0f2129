"""The `latentveil` command line: one entry point, one subcommand per job.

Every subcommand is a thin wrapper over a library function that tests call directly. Heavy
modules are imported inside the handlers so that `latentveil --help` stays fast. Errors a user
can cause (common.errors.LatentveilError and missing files) end in one line on stderr and exit
code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from common.errors import LatentveilError

Handler = Callable[[argparse.Namespace], int]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and repeated --set key=value, shared by every subcommand that runs."""
    parser.add_argument(
        "--config", default=None, help="YAML config file (default: built-in defaults)"
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

    config = load_config(args.config, args.overrides)
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
        "--out", default=None, help="write the resolved config here instead of printing"
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
    parser.add_argument("--out", required=True, help="folder of the world (created if missing)")
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
    skipped = extract_features(
        items,
        encoder,
        args.out,
        config.features,
        progress=not args.quiet,
        on_error="skip" if args.skip_bad else "raise",
    )
    for video_id, reason in skipped:
        print(f"skipped {video_id}: {reason}", file=sys.stderr)
    print(f"feature store ready at {args.out} ({len(items) - len(skipped)} files)")
    return 0


def _add_extract_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "extract",
        help="encode videos once with the frozen encoder into an HDF5 feature store",
        description="Encode every video (and still image) of a folder or a world into an HDF5 "
        "feature store: clip features, evaluation-clip features and static-clip features per "
        "video. Interrupted, it resumes; run on a store it only encodes what is new or changed.",
    )
    parser.add_argument(
        "--data", required=True, help="a world folder (with world.json) or any folder of videos"
    )
    parser.add_argument("--out", required=True, help="the feature store (.h5) to create or extend")
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
    parser.add_argument("--world", required=True, help="folder of the pre-training world")
    parser.add_argument(
        "--out", required=True, help="checkpoint to write (e.g. common/checkpoints/tiny3d.pt)"
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
    parser.add_argument("--out", required=True, help="folder for features and leakage.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)
    return _leakage_command


def _simulate_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.config import load_config
    from common.layout import RunLayout
    from simulations.simulate import simulate

    out = Path(args.out)
    if args.resume:
        config_path = RunLayout(out).config
        if not config_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {config_path} does not exist")
        config = load_config(config_path, args.overrides)
    else:
        config = load_config(args.config, args.overrides)
    started = time.time()
    report = simulate(config, out, resume=args.resume, progress=not args.quiet)
    summary = json.loads(report.read_text())
    base, anon = summary["baseline"], summary["anonymized"]
    tasks = "".join(
        f"; {task['title']} {base[task['metric']]:.2f} -> {anon[task['metric']]:.2f} "
        f"(+- {anon[task['metric'] + '_se']:.2f})"
        for task in summary["tasks"].values()
    )
    print(
        f"privacy cMAP, worst attacker on video {base['privacy_cmap']:.2f} -> "
        f"{anon['privacy_cmap']:.2f} ({anon['privacy_attacker']}; "
        f"{100 * summary['privacy_reduction_rel']:.1f}% lower; "
        f"chance {summary['privacy_chance_cmap']:.2f}){tasks}\n"
        f"report: {report} ({time.time() - started:.0f} s)"
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
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete round",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)
    return _simulate_command


def _prepare_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from common.config import load_config, save_config
    from common.layout import RunLayout
    from simulations.simulate import prepare_run

    config = load_config(args.config, args.overrides)
    out = Path(args.out)
    save_config(config, RunLayout(out).config)
    prepare_run(config, out, progress=not args.quiet)
    print(f"run folder ready at {out}: `flwr run . --run-config 'run-dir=\"{out}\"'` trains on it")
    return 0


def _add_prepare_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "prepare",
        help="prepare a run folder (world, features, evaluation set) for `flwr run .`",
        description="Everything `simulate` does before training: generate the world if missing, "
        "extract the central evaluation set and each site's features, write sites.json.",
    )
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)
    return _prepare_command


def _frontier_command(args: argparse.Namespace) -> int:
    from server.frontier import write_frontier

    table = write_frontier(args.runs, args.out)
    print(table.read_text(), end="")
    print(f"written to {table} (and frontier.json, frontier.png beside it)")
    return 0


def _add_frontier_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "frontier",
        help="the privacy-utility frontier of several runs (one point per run folder)",
        description="Read each run folder's report.json and write a table, JSON and a plot of "
        "worst-case video cMAP against AR top-1 (the selected round of each run).",
    )
    parser.add_argument("runs", nargs="+", help="run folders written by `latentveil simulate`")
    parser.add_argument("--out", required=True, help="folder for frontier.md/.json/.png")
    return _frontier_command


def _ablate_command(args: argparse.Namespace) -> int:
    from common.config import load_config
    from simulations.ablate import run_ablation

    config = load_config(args.config, args.overrides)
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    table = run_ablation(config, args.out, args.seen, variants, progress=not args.quiet)
    print(table.read_text(), end="")
    print(f"written to {table} (and ablation.json, ablation.png beside it)")
    return 0


def _add_ablate_parser(subparsers: argparse._SubParsersAction) -> Handler:
    parser = subparsers.add_parser(
        "ablate",
        help="generalisation and loss ablations: all tasks seen, one task seen, no L_LC, ...",
        description="Run the variants of simulations/ablate.py (all_seen, ar_only, no_lc, "
        "no_budget, paper_weights) on the same world and features, and write OUT/ablation.md, "
        "ablation.json and ablation.png: each variant's privacy and every evaluated task.",
    )
    parser.add_argument("--out", required=True, help="folder for the runs and the table")
    parser.add_argument(
        "--seen", default="ar", help="the task the one-task variants train (default ar)"
    )
    parser.add_argument(
        "--variants", default="", help="comma-separated subset of the variants (default all)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)
    return _ablate_command


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], Handler]] = [
    _add_config_parser,
    _add_world_parser,
    _add_extract_parser,
    _add_pretrain_parser,
    _add_leakage_parser,
    _add_prepare_parser,
    _add_simulate_parser,
    _add_frontier_parser,
    _add_ablate_parser,
]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The argument parser and a handler per subcommand name."""
    parser = argparse.ArgumentParser(
        prog="latentveil",
        description="Federated latent anonymization for video (SPLAVU on Flower).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    for add in SUBCOMMANDS:
        before = set(subparsers.choices)
        handler = add(subparsers)
        (name,) = set(subparsers.choices) - before
        handlers[name] = handler
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `latentveil` command line; returns the process exit code."""
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except (LatentveilError, FileNotFoundError) as error:
        print(f"latentveil {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentveil {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
