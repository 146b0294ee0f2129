"""The server: a Flower ServerApp (Message API) running federated SPLAVU.

It reads the resolved RunConfig from the run config (`config-yaml`), the central evaluation set
from the run folder (made by `latentveil simulate` / `latentveil prepare`), runs the rounds with
the configured Flower strategy (server.federation), saves the final adapter and writes the
report. One line per round goes to the log.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.atomic import atomic_path
from common.config import RunConfig, save_config
from common.encoders import create_encoder
from common.evaluation import EVALUATION_SET_FILE, EvaluationSet
from common.runconfig import run_config_from_context, run_dir
from common.weights import state_nbytes
from server.federation import run_federation
from server.report import build_report, write_report

log = logging.getLogger("latentveil.server")
app = ServerApp()

SITES_FILE = "sites.json"
ADAPTER_FILE = "adapter.npz"


def round_line(record: dict[str, Any]) -> str:
    """One human line per round."""
    parts = [f"round {record['round']:3d}"]
    train = record.get("train", {})
    if train:
        losses = (("L_B", "loss_b", 3), ("L_LC", "loss_lc", 4), ("L_T", "loss_t", 3))
        nan = float("nan")
        parts.append(" ".join(f"{n} {train.get(k, nan):.{d}f}" for n, k, d in losses))
    if "evaluation" in record:
        evaluation = record["evaluation"]
        parts.append(
            f"privacy cMAP {evaluation['privacy_cmap']:.2f} ({evaluation.get('privacy_attacker')}) "
            f"stills {evaluation.get('privacy_stills_cmap', float('nan')):.2f} "
            f"AR top-1 {evaluation['ar_top1']:.2f}"
        )
    if record.get("sites_rejected"):
        parts.append(f"{len(record['sites_rejected'])} update(s) rejected")
    parts.append(f"{record.get('seconds', 0.0):.1f} s")
    return " | ".join(parts)


def save_adapter(arrays: dict[str, np.ndarray], path: Path) -> None:
    """The AAM + head arrays the run ships, for the edge export."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def communication_summary(config: RunConfig, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        encoder_params = sum(p.numel() for p in create_encoder(config.encoder).parameters())
    except (FileNotFoundError, ValueError, ImportError):
        encoder_params = None
    return {
        "shared_params": int(sum(a.size for a in arrays.values())),
        "encoder_params": encoder_params,
        "bytes_per_client_per_round": state_nbytes(arrays),
    }


def finish_run(
    config: RunConfig,
    folder: Path,
    history: dict[str, Any],
    arrays: dict[str, np.ndarray],
    wall: float,
) -> Path:
    """Save the adapter the run ships (the selected round's arrays, server.selection) and
    write the report (federated and centralized runs alike)."""
    save_adapter(arrays, folder / ADAPTER_FILE)
    sites_path = folder / SITES_FILE
    sites = json.loads(sites_path.read_text()) if sites_path.is_file() else []
    report = build_report(config, history, communication_summary(config, arrays), sites, wall)
    return write_report(report, folder)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federated training with central evaluation; writes RUN_DIR/report.json."""
    started = time.time()
    config = run_config_from_context(context.run_config)
    folder = run_dir(context.run_config)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    evaluation_set = EvaluationSet.load(folder / EVALUATION_SET_FILE)
    resume = bool(context.run_config.get("resume", False))

    def announce(record: dict[str, Any]) -> None:
        line = round_line(record)
        log.info(line)
        print(line, flush=True)

    state = run_federation(grid, config, folder, evaluation_set, resume=resume, on_round=announce)
    shipped = state.selected or state.arrays
    report = finish_run(config, folder, state.history, shipped, time.time() - started)
    print(f"report written to {report}", flush=True)
