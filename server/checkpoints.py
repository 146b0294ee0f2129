"""Per-round server checkpoints: aggregated arrays, round number, trainer state, history.

One file per run (`RUN_DIR/checkpoint.npz`), replaced atomically after every round, so an
interrupted run always finds the last complete round. `--resume RUN_DIR` continues from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.errors import LatentveilError
from common.layout import RunLayout
from server.history import History

FORMAT = "latentveil-server-checkpoint-1"


class CheckpointError(LatentveilError):
    """A checkpoint that is missing, corrupt or from another run."""


@dataclass
class ServerState:
    """What a run needs to continue after its last complete round."""

    round: int
    arrays: dict[str, np.ndarray]
    # What the round loop's trainer needs to continue (a strategy's state, an optimiser's).
    trainer_state: dict[str, np.ndarray]
    history: History | None = None  # None only before a run has its baseline
    # The arrays of history.selected_round (server.selection): what the run ships.
    selected: dict[str, np.ndarray] = field(default_factory=dict)


def save_checkpoint(run_dir: str | Path, state: ServerState) -> Path:
    """Write the state atomically as RUN_DIR/checkpoint.npz."""
    path = RunLayout(Path(run_dir)).checkpoint
    meta = {
        "format": FORMAT,
        "round": state.round,
        "history": state.history and state.history.to_json(),
    }
    payload = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    payload |= {f"arrays/{name}": array for name, array in state.arrays.items()}
    payload |= {f"strategy/{name}": array for name, array in state.trainer_state.items()}
    payload |= {f"selected/{name}": array for name, array in state.selected.items()}
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **payload)
    return path


def load_checkpoint(run_dir: str | Path) -> ServerState:
    """Read RUN_DIR/checkpoint.npz; a clear error when it is missing or not a checkpoint."""
    path = RunLayout(Path(run_dir)).checkpoint
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("arrays/")}
            strategy = {
                k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("strategy/")
            }
            selected = {
                k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("selected/")
            }
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is not a readable server checkpoint: {error}") from error
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        history = History.from_json(meta["history"]) if meta["history"] is not None else None
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path} holds a history this version cannot read: {error}") from None
    return ServerState(meta["round"], arrays, strategy, history, selected)
