"""Reading JSON-lines manifests: one JSON object per line, one line per file of a dataset.

Worlds (`simulations.world`) and camera sites (`common.sitedata`) describe their files this way.
This module only parses; what a manifest must contain, and what to do about a broken one, is
said by the caller, which can catch `ManifestError` and add its own advice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.errors import LatentveilError


class ManifestError(LatentveilError):
    """A JSON-lines file that cannot be read, or a line of it that is not a JSON object;
    the message names the file (and line)."""


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; blank lines are skipped.

    Raises ManifestError naming `path:line` for a line that is not JSON or not a JSON object
    (a half-written line, a merge conflict marker, a bare list), and naming the file when it is
    missing or not UTF-8 text.
    """
    path = Path(path)
    entries: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError as error:
                    raise ManifestError(f"{path}:{number}: not a JSON line ({error})") from None
                if not isinstance(entry, dict):
                    raise ManifestError(
                        f"{path}:{number}: not a JSON object (a {type(entry).__name__})"
                    )
                entries.append(entry)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 text ({error})") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a directory, not a JSON-lines file") from None
    return entries
