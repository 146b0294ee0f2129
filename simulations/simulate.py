"""The main job: simulate federated SPLAVU across the synthetic camera sites.

    latentveil simulate --config simulations/configs/default.yaml --out runs/default

1. prepare: generate the world if missing, extract the central evaluation features (the
   evaluation set) and every site's features (resumable), describe the sites (sites.json);
2. run: Flower's Simulation Engine (Ray backend) through `flwr run`, one SuperNode per site,
   with the ServerApp and ClientApp of this project; or, with federation.mode=centralized, the
   same training on all sites' data pooled, in this process, with the same epoch budget;
3. the ServerApp (or the centralized loop) evaluates centrally and writes the report.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_write_text
from common.config import RunConfig, save_config
from common.encoders import BUILTIN_TINY3D
from common.errors import LatentveilError
from common.evaluation import EvaluationSet, check_evaluation_set
from common.layout import RunLayout
from common.runconfig import config_as_yaml
from common.sitedata import (
    ensure_site_features,
    load_site_data,
    pool_site_data,
    site_static_clips,
    site_tensors,
)
from server.centralized import PooledTrainer
from server.history import RoundRecord
from server.rounds import finish_run, round_line, run_rounds
from simulations.world import ACTIONS, ATTRIBUTES, World, generate_world, load_world
from simulations.worldfeatures import prepare_evaluation_set

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SimulationError(LatentveilError):
    """A simulation that could not run or did not finish."""


def check_runnable(config: RunConfig) -> None:
    """What a run needs beyond the config schema, checked before it writes anything: a
    federated run's strategy is registered (the schema cannot see server.strategies)."""
    if config.federation.mode == "federated":
        from server.strategies import STRATEGIES  # imports Flower: only for a federated run

        STRATEGIES.get(config.federation.strategy)  # an unknown name lists the known ones


def world_dir_of(config: RunConfig, run_dir: Path) -> Path:
    return RunLayout(run_dir).world(config.world.dir)


def generate_run_world(config: RunConfig, run_dir: Path, progress: bool = True) -> Path:
    """The run's world (`world.dir`, or the run folder's), generated unless it is complete."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return generate_world(
        world_dir_of(config, run_dir),
        preset=config.world.preset,
        sites=config.world.sites,
        seed=config.world.seed,
        alpha=config.world.dirichlet_alpha,
        progress=progress,
    )


def prepare_central(config: RunConfig, run_dir: Path, progress: bool = True) -> World:
    """The world (generated if missing) and the central evaluation set in `run_dir`: what every
    run needs before its sites train, whoever extracts the sites' features."""
    world_root = generate_run_world(config, run_dir, progress)
    evaluation_set = prepare_evaluation_set(
        world_root, run_dir, config.encoder, config.features, progress
    )
    check_evaluation_set(EvaluationSet.load(evaluation_set), config)
    return load_world(world_root)


def prepare_run(config: RunConfig, run_dir: str | Path, progress: bool = True) -> Path:
    """World, central evaluation set, per-site feature stores and sites.json in `run_dir`."""
    run_dir = Path(run_dir)
    world = prepare_central(config, run_dir, progress)
    prepare_sites(config, run_dir, world, progress)
    write_sites(world, run_dir)
    return world_dir_of(config, run_dir)


def prepare_sites(config: RunConfig, run_dir: Path, world: World, progress: bool = True) -> None:
    """Each simulated site's feature store in `run_dir` (encoded unless complete)."""
    layout = RunLayout(run_dir)
    for site_id in world.sites:
        ensure_site_features(
            world_dir_of(config, run_dir) / site_id,
            layout.site_store(site_id),
            config.encoder,
            config.features,
            progress,
            tasks=tuple(config.tasks.seen),
            static_clips=site_static_clips(config.features, config.loss),
        )


def write_sites(world: World, run_dir: Path) -> None:
    """sites.json: each site's videos, action mix, attribute prevalence and (once made) the
    size of its feature store."""
    layout = RunLayout(run_dir)
    sites = []
    for site_id in world.sites:
        store = layout.site_store(site_id)
        entries = world.manifest("ar", site_id)
        train = [e for e in entries if e["split"] == "train"]
        actions = Counter(e["labels"]["action_name"] for e in train)
        sites.append(
            {
                "site": site_id,
                "train_videos": len(train),
                "val_videos": len(entries) - len(train),
                "feature_store_mb": round(store.stat().st_size / 1e6, 2)
                if store.is_file()
                else None,
                "action_mix": {name: actions.get(name, 0) for name in ACTIONS},
                "attribute_prevalence": {
                    name: float(np.mean([e["attributes"][name] for e in train]))
                    for name in ATTRIBUTES
                },
            }
        )
    atomic_write_text(layout.sites, json.dumps(sites, indent=1) + "\n")


def _with_absolute_paths(config: RunConfig, run_dir: Path) -> RunConfig:
    """The config the Flower apps receive: paths that mean the same from any working folder
    and from the app bundle (which does not carry the built-in checkpoint)."""
    encoder_path = config.encoder.path
    if config.encoder.name == "tiny3d" and encoder_path == "builtin":
        encoder_path = str(BUILTIN_TINY3D)
    elif encoder_path:
        encoder_path = str(Path(encoder_path).resolve())
    world = replace(config.world, dir=str(world_dir_of(config, run_dir).resolve()))
    return replace(config, encoder=replace(config.encoder, path=encoder_path), world=world)


# ---------------------------------------------------------------------------------------------
# Centralized: the same training on pooled data, for comparison


def run_centralized(
    config: RunConfig, run_dir: Path, resume: bool = False, progress: bool = True
) -> Path:
    """Train on all sites' training data pooled with the federated run's epoch budget
    (rounds x local epochs), with the same round loop (server.rounds); writes the report."""
    started = time.time()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=True)
    layout = RunLayout(run_dir)
    world = load_world(world_dir_of(config, run_dir))
    tasks = tuple(config.tasks.seen)
    pooled = pool_site_data(
        [load_site_data(world.root / s, layout.site_store(s), tasks, "train") for s in world.sites]
    )
    trainer = PooledTrainer(site_tensors(pooled), config)
    evaluation_set = EvaluationSet.load(layout.evaluation_set)

    def announce(record: RoundRecord) -> None:
        print(round_line(record), flush=True)

    state = run_rounds(config, run_dir, evaluation_set, trainer, resume, on_round=announce)
    return finish_run(
        config, run_dir, state.history, state.selected or state.arrays, time.time() - started
    )


# ---------------------------------------------------------------------------------------------
# Federated: Flower's Simulation Engine through `flwr run`


def flower_environment(run_dir: Path) -> dict[str, str]:
    """Environment of the Flower processes: a private FLWR_HOME, no dependency installs."""
    home = RunLayout(run_dir).flower_home
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home.resolve())
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def _flower_run_config(config: RunConfig, run_dir: Path, resume: bool) -> Path:
    """The --run-config TOML file: the resolved config and the run folder."""
    values = {
        "config-yaml": config_as_yaml(_with_absolute_paths(config, run_dir)),
        "run-dir": str(run_dir.resolve()),
        "world-dir": str(world_dir_of(config, run_dir).resolve()),
        "resume": resume,
    }
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")  # a JSON string is a valid TOML string
    path = RunLayout(run_dir).flower_run_config
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _other_local_superlinks(flwr_home: Path) -> list[int]:
    """PIDs of local SuperLinks on this machine that belong to another FLWR_HOME: another run.

    `flwr run` starts its local SuperLink on fixed ports (127.0.0.1:39091/39093) and reuses any
    healthy one it finds there, so a second simulation would join the first one's SuperLink.
    """
    ours = set(_run_processes(flwr_home))
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in ours:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"flower-superlink") for part in cmdline[:2]) and (
            b"--simulation" in cmdline
        ):
            pids.append(int(proc.name))
    return pids


def _refuse_a_shared_superlink(flwr_home: Path) -> None:
    others = _other_local_superlinks(flwr_home)
    if others:
        raise SimulationError(
            "another Flower simulation is running on this machine (local SuperLink, pid "
            f"{', '.join(map(str, others))}); two runs would share it: wait for it to finish "
            "or stop it"
        )


def flower_failure(log_path: Path) -> str:
    """The cause of a failed Flower run in one line: the last exception line of its log."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        text = line.strip()
        head = text.split(":", 1)[0]
        if ":" in text and head.split(".")[-1].endswith(("Error", "Exception", "Interrupt")):
            return text
    return ""


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run_processes(flwr_home: Path) -> list[int]:
    """Every process started with this run's FLWR_HOME (flwr, the local SuperLink, its
    SuperExec, flwr-simulation, Ray's workers), except this one."""
    marker = f"FLWR_HOME={flwr_home}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _with_descendants(pids: list[int]) -> list[int]:
    """`pids` and every process below them (Ray starts agents with a cleaned environment, so
    only their parentage ties them to the run)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
    found, queue = [], list(pids)
    while queue:
        pid = queue.pop()
        if pid not in found and pid != os.getpid():
            found.append(pid)
            queue += children.get(pid, [])
    return found


def stop_run_processes(flwr_home: Path, grace: float = 5.0, crash: bool = False) -> None:
    """Stop whatever this run started: SIGTERM; SIGTERM again after 1 s to what is still up (a
    SuperLink caught by the first one inside a lock printed "Signal 15 ignored due to race
    condition" and went on, holding the stop up for the whole grace); SIGKILL what is still up
    after `grace` seconds. `crash`: SIGKILL at once, then wait up to `grace` seconds for them to
    be gone."""
    pids = _with_descendants(_run_processes(flwr_home))
    first = min(1.0, grace)
    steps = (
        ((signal.SIGKILL, grace),)
        if crash
        else ((signal.SIGTERM, first), (signal.SIGTERM, grace - first), (signal.SIGKILL, grace))
    )
    for sig, wait in steps:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, waiting for its parent


def flwr_command(config: RunConfig, run_dir: Path) -> str:
    """The complete shell command that runs a prepared run folder with `flwr run` (what
    `latentveil simulate` runs, minus stopping the local SuperLink it leaves behind)."""
    home = RunLayout(run_dir).flower_home.resolve()
    run_config = f'run-dir="{Path(run_dir).resolve()}"'
    federation = (
        f"num-supernodes={config.world.sites} "
        f"client-resources-num-cpus={config.federation.cpus_per_site:g}"
    )
    return (
        f"  FLWR_HOME={shlex.quote(str(home))} FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 "
        f"flwr run {shlex.quote(str(PROJECT_ROOT))} --stream "
        f"--run-config {shlex.quote(run_config)} "
        f"--federation-config {shlex.quote(federation)}\n"
        "  (flwr run leaves its local SuperLink running afterwards; stop it by its pid, or use "
        "`latentveil simulate`, which does)"
    )


def stream_flwr(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    started: list[subprocess.Popen],
    on_line: Callable[[str], None] | None = None,
) -> int:
    """Run `flwr run ... --stream` into `log_path`, echoing our own round lines and errors (the
    full Flower log is in the file); the process goes into `started` for the caller to stop.
    `on_line` sees every line (deploy-local acts on round lines). Returns its exit code."""
    # Line-buffered: the log is read while the run goes on (`tail -f`, deploy-local's round
    # watcher, a test waiting for a round); a block-buffered file showed round 1 only when 8 KB
    # had gathered, which for a small run is its end.
    with open(log_path, "w", buffering=1) as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        for line in process.stdout:
            log.write(line)
            if line.lstrip().startswith(("round ", "report written")) or "ERROR" in line:
                print(line.rstrip(), flush=True)
            if on_line is not None:
                on_line(line)
        return process.wait()


def run_flower_simulation(config: RunConfig, run_dir: Path, resume: bool = False) -> Path:
    """Run the ServerApp and one ClientApp per site on Flower's Simulation Engine."""
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise SimulationError(
            f"flwr run needs the project's source tree (pyproject.toml) at {PROJECT_ROOT}; "
            "install latentveil from a clone with `pip install -e .`"
        )
    flwr = shutil.which("flwr") or str(Path(sys.executable).parent / "flwr")
    env = flower_environment(run_dir)
    _refuse_a_shared_superlink(Path(env["FLWR_HOME"]))
    run_config = _flower_run_config(config, run_dir, resume)
    federation_config = (
        f"num-supernodes={config.world.sites} "
        f"client-resources-num-cpus={config.federation.cpus_per_site:g}"
    )
    # flwr runs in the project root: every path it is given must be absolute.
    run_config = run_config.resolve()
    command = [flwr, "run", str(PROJECT_ROOT), "--stream", "--run-config", str(run_config),
               "--federation-config", federation_config]  # fmt: skip
    report = RunLayout(run_dir).report_json
    if report.exists():
        # (the command line refuses this earlier, or removes it with --overwrite)
        raise SimulationError(f"{run_dir} already holds a finished run ({report.name})")
    log_path = RunLayout(run_dir).flower_log
    started: list[subprocess.Popen] = []
    # SIGTERM (a timeout around the command, a scheduler) must stop what this run started, as
    # Ctrl-C does: turn it into an exception so that the cleanup below runs.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        returncode = stream_flwr(command, env, log_path, started)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in started:
            if process.poll() is None:
                process.terminate()
        stop_run_processes(Path(env["FLWR_HOME"]))
    # `flwr run --stream` exits 0 even when the run failed: the report, which the ServerApp
    # writes once at the very end (there was none before), is the proof of success.
    if returncode != 0 or not report.exists():
        cause = flower_failure(log_path)
        raise SimulationError(
            f"the Flower run did not finish (exit code {returncode})"
            + (f": {cause}" if cause else "")
            + f"; see {log_path}"
        )
    return report


def check_run_folder(run_dir: Path, resume: bool, overwrite: bool, config_given: bool) -> str:
    """What `simulate` may do in `run_dir`: "new", "resume", or "finished" (nothing to do).

    A folder that holds a run is never restarted silently: without --resume it takes
    --overwrite (which removes that run's outputs and keeps its world and features, caches
    checked against the settings that made them). A resumed run keeps its own config.yaml:
    --config and --set cannot change a run half-way.
    """
    layout = RunLayout(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise SimulationError(f"{run_dir} is a file, not a run folder; choose another --out")
    if resume:
        if overwrite:
            raise SimulationError("--resume continues a run and --overwrite starts over: pick one")
        if not layout.config.is_file():
            raise FileNotFoundError(f"nothing to resume: {layout.config} does not exist")
        if config_given:
            raise SimulationError(
                f"--resume continues {run_dir} with its own config.yaml; --config and --set "
                "cannot change a run half-way (start a new run folder, or --overwrite this one)"
            )
        return "finished" if layout.report_json.is_file() else "resume"
    outputs = [p for p in run_outputs(layout) if p.exists()]
    if outputs and not overwrite:
        what = "a finished run" if layout.report_json.exists() else "an unfinished run"
        raise SimulationError(
            f"{run_dir} already holds {what} ({outputs[0].name}); continue it with --resume, "
            "start over with --overwrite, or choose another --out"
        )
    for path in outputs:
        path.unlink()
    return "new"


def run_outputs(layout: RunLayout) -> list[Path]:
    """What a run writes (removed by --overwrite); the world and the features stay."""
    return [
        layout.checkpoint,
        layout.adapter,
        layout.report_json,
        layout.report_md,
        layout.rounds_plot,
        layout.frontier_plot,
        layout.flower_log,
        layout.flower_run_config,
        layout.wire_log,
    ]


def extend_run(run_dir: Path, rounds: int) -> RunConfig:
    """The config to train the run in `run_dir` on to `rounds` rounds in all with (`simulate
    --extend-to`): its own, with `federation.rounds` raised; for `simulate(..., resume=True,
    extending=True)`, which removes the old report once its own checks have passed (the report
    is written again when the rounds end). Changes nothing.

    The rounds the run has, their evaluations and the selection so far are kept, so its rounds
    and arrays are those of a run given `rounds` from the start; one thing differs: its old
    last round was evaluated (every run's last round is), which such a run would have evaluated
    only if `evaluation.every` divided it, and the selection may keep that round."""
    from common.config import load_config
    from server.checkpoints import CheckpointError, load_checkpoint

    layout = RunLayout(run_dir)
    config = load_config(layout.config)
    planned = config.federation.rounds
    if rounds <= planned:
        try:
            done = load_checkpoint(run_dir).round
        except CheckpointError:
            done = planned
        if done < planned:  # an extension (or a run) interrupted before its last round
            raise SimulationError(
                f"--extend-to {rounds}: the run in {run_dir} has {planned} rounds planned and "
                f"{done} done; continue it with --resume"
            )
        raise SimulationError(
            f"--extend-to {rounds}: the run in {run_dir} has {planned} rounds planned; "
            "extend it to more"
        )
    state = load_checkpoint(run_dir)  # a clear error when it is missing or not a checkpoint
    if state.history.stopped:
        raise SimulationError(
            f"the run in {run_dir} {state.history.stopped}; it cannot go on (start a new run)"
        )
    return replace(config, federation=replace(config.federation, rounds=rounds))


def simulate(
    config: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    extending: bool = False,
) -> Path:
    """The main job; returns the path of report.json. `extending`: a finished run goes on with
    more rounds (`extend_run`); its old report goes once the checks below have passed."""
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    check_runnable(config)  # before any work
    if config.federation.mode == "federated":
        # another run's local SuperLink would be shared: refuse before any preparation
        _refuse_a_shared_superlink(layout.flower_home.resolve())
    if extending:
        # The report first: interrupted before the config below is saved, the folder is an
        # unfinished run of its old length, which --resume finishes.
        for path in (layout.report_json, layout.report_md):
            path.unlink(missing_ok=True)
    save_config(config, layout.config)
    prepare_run(config, run_dir, progress)
    if config.federation.mode == "centralized":
        return run_centralized(config, run_dir, resume, progress)
    if config.federation.mode != "federated":
        raise SimulationError(
            f"federation.mode must be federated or centralized, not {config.federation.mode!r}"
        )
    return run_flower_simulation(config, run_dir, resume)
