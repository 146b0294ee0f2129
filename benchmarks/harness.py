"""Helpers shared by the benchmark scripts: machine description and atomic JSON results."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from common.atomic import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The embedded default config, what the main job runs.
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "simulations" / "configs" / "default.yaml"


def machine_info() -> dict[str, Any]:
    """Where and when a benchmark ran."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Write a benchmark result as JSON, atomically, with the machine description."""
    path = Path(path)
    atomic_write_text(path, json.dumps({"machine": machine_info(), **result}, indent=2) + "\n")
    return path
