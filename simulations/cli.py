"""The `latentveil` command line: one entry point, one subcommand per job.

Every subcommand is a thin wrapper over a library function that tests call directly. Heavy
modules are imported inside the handlers so that `latentveil --help` stays fast. Errors a user
can cause (common.errors.LatentveilError and missing files) end in one line on stderr and exit
code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
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


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], Handler]] = [
    _add_config_parser,
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
