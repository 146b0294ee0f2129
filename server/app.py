"""The server: a Flower ServerApp (Message API) running federated SPLAVU.

It reads the resolved RunConfig from the run config (`config-yaml`), the central evaluation set
from the run folder (made by `latentveil simulate` / `latentveil prepare`), runs the rounds with
the configured Flower strategy (server.federation), saves the final adapter and writes the
report. One line per round goes to the log.
"""

from __future__ import annotations

import logging
import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import save_config
from common.evaluation import EvaluationSet
from common.layout import RunLayout
from common.runconfig import run_config_from_context, run_dir
from server.federation import run_federation
from server.history import RoundRecord
from server.rounds import finish_run, round_line

log = logging.getLogger("latentveil.server")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federated training with central evaluation; writes RUN_DIR/report.json."""
    started = time.time()
    config = run_config_from_context(context.run_config)
    layout = RunLayout(run_dir(context.run_config))
    layout.root.mkdir(parents=True, exist_ok=True)
    save_config(config, layout.config)
    evaluation_set = EvaluationSet.load(layout.evaluation_set)
    resume = bool(context.run_config.get("resume", False))

    def announce(record: RoundRecord) -> None:
        line = round_line(record)
        log.info(line)
        print(line, flush=True)

    state = run_federation(
        grid, config, layout.root, evaluation_set, resume=resume, on_round=announce
    )
    shipped = state.selected or state.arrays
    report = finish_run(config, layout.root, state.history, shipped, time.time() - started)
    print(f"report written to {report}", flush=True)
