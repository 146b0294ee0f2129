"""`latentveil deploy-local`: the federation on Flower's Deployment Engine, on this machine.

    latentveil deploy-local --config CFG --sites N --out RUN --insecure

The same ServerApp and ClientApp as `simulate`, but each site is a real `flower-supernode`
process and the server a real `flower-superlink`, talking over 127.0.0.1 as they would across
hosts:

1. the run folder is prepared as `simulate` prepares it (world, central evaluation set), except
   that no site's features are extracted here: each site encodes its own videos, through its
   edge encoder, on its first round (client.app);
2. a SuperLink starts (its state in memory, or with `superlink_db` in `deploy/superlink.db`)
   with runtime dependency installation disabled;
3. one SuperNode per site, each on its own port, names its site folder and feature store in its
   node config (sites are known by that, never by Flower's node id);
4. `flwr run` sends the app to the SuperLink through a named connection (`deploy`) in the run's
   own `$FLWR_HOME/config.toml`;
5. every process it started is stopped by PID, however the command ends, and the run folder
   holds the same report as `simulate` writes.

Logs: `deploy/superlink.log`, `deploy/<site>.log`, and `flower.log` for `flwr run`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from client.worker import thread_environment
from common.atomic import atomic_write_text
from common.config import RunConfig, save_config
from common.layout import RunLayout
from simulations.certs import Certificates, make_certificates, make_site_key
from simulations.simulate import (
    PROJECT_ROOT,
    SimulationError,
    _flower_run_config,
    _raise_interrupt,
    flower_environment,
    flower_failure,
    prepare_central,
    stop_run_processes,
    stream_flwr,
    world_dir_of,
    write_sites,
)
from simulations.world import load_world

CONNECTION = "deploy"
# How long a started SuperLink may take to accept connections.
STARTUP_SECONDS = 30.0


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SimulationError(
                f"the SuperLink exited with code {process.returncode} at start; see {log}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SimulationError(f"the SuperLink did not listen on 127.0.0.1:{port}; see {log}")


def write_connection(flwr_home: Path, port: int, certificates: Certificates | None = None) -> Path:
    """The named connection `flwr run` reads (flwr 1.41 takes the SuperLink address and any
    root certificate from $FLWR_HOME/config.toml, not from pyproject)."""
    path = flwr_home / "config.toml"
    security = (
        "insecure = true"
        if certificates is None
        else f"root-certificates = {json.dumps(str(certificates.ca_cert.resolve()))}"
    )
    atomic_write_text(
        path,
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\n{security}\n',
    )
    return path


def register_site(certificates: Certificates, site_id: str, env: dict, deploy_dir: Path) -> None:
    """`flwr supernode register` of a site's public key with the running SuperLink."""
    flwr = shutil.which("flwr") or str(Path(sys.executable).parent / "flwr")
    command = [flwr, "supernode", "register", str(certificates.site_public_key(site_id).resolve()),
               CONNECTION, "--name", site_id]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    with open(deploy_dir / "register.log", "a") as log:
        log.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        raise SimulationError(
            f"registering {site_id}'s key with the SuperLink failed (exit code "
            f"{result.returncode}); see {deploy_dir / 'register.log'}"
        )


def prepare_deployment(config: RunConfig, run_dir: Path, progress: bool = True) -> list[str]:
    """World and central evaluation set in the run folder; the site ids. No site features:
    the sites make their own."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, RunLayout(run_dir).config)
    world = prepare_central(config, run_dir, progress)
    write_sites(world, run_dir)  # (the stores' sizes are not known yet)
    return list(world.sites)


@dataclass(frozen=True)
class SiteEvent:
    """`--kill-site SITE@ROUND` / `--rejoin-site SITE@ROUND`: act on a site's SuperNode when
    round ROUND begins (when the line of round ROUND-1 is printed)."""

    site: str
    round: int

    @classmethod
    def parse(cls, text: str) -> SiteEvent:
        site, _, number = text.partition("@")
        if not site or not number.isdigit() or int(number) < 1:
            raise SimulationError(f"expected SITE@ROUND (e.g. site_01@2), not {text!r}")
        return cls(site, int(number))


ROUND_LINE = re.compile(r"^\s*round\s+(\d+) \|")


ISOLATIONS = ("process", "subprocess")


class ServerStopped(SimulationError):
    """deploy-local stopped its server after a round, as asked (`stop_after_round`)."""


def deploy_local(
    config: RunConfig,
    run_dir: str | Path,
    sites: int | None = None,
    insecure: bool = False,
    progress: bool = True,
    unregistered: int = 0,
    kill: tuple[SiteEvent, ...] = (),
    rejoin: tuple[SiteEvent, ...] = (),
    faults: dict[str, str] | None = None,
    stop_after_round: int | None = None,
    resume: bool = False,
    superlink_db: bool = False,
    isolation: str = "process",
) -> Path:
    """Run the federation on a local SuperLink and one SuperNode per site; return report.json.

    By default the SuperLink serves TLS and admits only SuperNodes whose public key is
    registered (`flwr supernode register`): keys and certificates are made in
    `<run>/deploy/certs` (simulations.certs). `insecure` drops both. `unregistered` starts that
    many extra SuperNodes whose keys were never registered (to show they are refused).

    Faults, for tests and drills: `kill` SIGKILLs a site's SuperNode (and its ClientApp) when a
    round begins, `rejoin` brings it back from when a round begins (restarting it until the
    SuperLink lets it in: about a minute after the kill with authentication), `faults` gives sites a
    node-config `fault` (client.mods.fault_mod), and `stop_after_round` kills (SIGKILL) the
    SuperLink, the ServerApp and every SuperNode once that round is complete (raising
    ServerStopped), as a server crash would; `resume` then continues the run from its
    checkpoint.

    `isolation` is how a site runs its ClientApp: "process" (default) starts each SuperNode
    with `--isolation process` beside the site's executor (client.executor), one long-lived
    process that runs every message; "subprocess" is Flower's default, a new ClientApp process
    per message that hands the work to the site's worker (client.worker).

    The SuperLink keeps its state in memory unless `superlink_db` (then in
    `deploy/superlink.db`): with 8 sites pushing their updates at once on this 2-core machine,
    Flower 1.41's SQLite state failed pushes with "database is locked" (its busy timeout is
    5 s) and the SuperNodes do not retry them. Nothing here needs the SuperLink's state across
    a restart: the keys are registered at every start and a resume starts from the run's own
    checkpoint.
    """
    if isolation not in ISOLATIONS:
        raise SimulationError(
            f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}"
        )
    run_dir = Path(run_dir)
    if sites is not None:
        config = replace(config, world=replace(config.world, sites=sites))
    layout = RunLayout(run_dir)
    site_ids = prepare_deployment(config, run_dir, progress)
    for event in (*kill, *rejoin):
        if event.site not in site_ids:
            raise SimulationError(
                f"--kill-site/--rejoin-site name {event.site!r}, which is not one of the sites "
                f"({', '.join(site_ids)})"
            )
    world_root = world_dir_of(config, run_dir).resolve()
    deploy_dir = run_dir / "deploy"
    deploy_dir.mkdir(exist_ok=True)
    layout.features.mkdir(exist_ok=True)
    env = flower_environment(run_dir)
    flwr_home = Path(env["FLWR_HOME"])
    superlink_port, *node_ports = free_ports(1 + len(site_ids) + unregistered)
    strangers = [f"unregistered_{i}" for i in range(unregistered)]
    certificates = None
    if not insecure:
        certificates = Certificates(deploy_dir / "certs")
        if not certificates.ca_cert.exists():
            make_certificates(certificates.folder, ["127.0.0.1"], site_ids)
        for stranger in strangers:
            make_site_key(certificates, stranger)
    write_connection(flwr_home, superlink_port, certificates)
    binaries = Path(sys.executable).parent
    if insecure:
        security = ["--insecure"]
    else:
        security = ["--ssl-ca-certfile", str(certificates.ca_cert.resolve()),
                    "--ssl-certfile", str(certificates.superlink_cert.resolve()),
                    "--ssl-keyfile", str(certificates.superlink_key.resolve()),
                    "--enable-supernode-auth"]  # fmt: skip

    def start(
        command: list[str],
        log_name: str,
        mode: str = "w",
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        with open(deploy_dir / log_name, mode) as handle:
            # its own process group: a killed site takes its ClientApp processes with it
            process = subprocess.Popen(
                command, env={**env, **(env_extra or {})}, stdout=handle,
                stderr=subprocess.STDOUT, cwd=run_dir, start_new_session=True,
            )  # fmt: skip
        started.append(process)
        return process

    threads = thread_environment(config.federation.cpus_per_site)  # as a site's worker has

    nodes: dict[str, subprocess.Popen] = {}
    executors: dict[str, subprocess.Popen] = {}
    ports = dict(zip(site_ids + strangers, node_ports, strict=True))

    def start_site(site_id: str, mode: str = "w") -> None:
        # a stranger claims to be the first site, with a store of its own
        site_dir = world_root / (site_ids[0] if site_id in strangers else site_id)
        node_config = (
            f'site-dir="{site_dir}" feature-store="{layout.site_store(site_id).resolve()}"'
        )
        if (faults or {}).get(site_id):
            node_config += f' fault="{faults[site_id]}"'
        node_security = (
            ["--insecure"]
            if certificates is None
            else ["--root-certificates", str(certificates.ca_cert.resolve()),
                  "--auth-supernode-private-key", str(certificates.site_key(site_id).resolve())]
        )  # fmt: skip
        isolated = ["--isolation", "process"] if isolation == "process" else []
        nodes[site_id] = start(
            [str(binaries / "flower-supernode"), *node_security, *isolated,
             "--superlink", f"127.0.0.1:{superlink_port}",
             "--port", str(ports[site_id]), "--node-config", node_config],
            f"{site_id}.log", mode,
        )  # fmt: skip
        if isolation == "process":
            # the site's executor; it also exits on its own when its SuperNode is gone
            executors[site_id] = start(
                [sys.executable, "-m", "client.executor",
                 "--runtime-api-address", f"127.0.0.1:{ports[site_id]}",
                 "--parent", str(nodes[site_id].pid)],
                f"{site_id}.executor.log", mode, env_extra=threads,
            )  # fmt: skip

    def on_line(line: str) -> None:
        match = ROUND_LINE.match(line)
        if not match:
            return
        done = int(match.group(1))
        if stop_after_round is not None and done >= stop_after_round:
            raise ServerStopped(f"the server was stopped after round {done}, as asked")
        for event in kill:
            if event.round == done + 1 and nodes[event.site].poll() is None:
                print(f"killing {event.site} (SIGKILL) as round {done + 1} begins", flush=True)
                _kill_group(nodes[event.site], signal.SIGKILL)
                if event.site in executors:
                    _kill_group(executors[event.site], signal.SIGKILL)
        for event in rejoin:
            if event.round == done + 1 and event.site not in returning:
                print(f"{event.site} comes back as round {done + 1} begins", flush=True)
                returning.add(event.site)
                threading.Thread(target=keep_up, args=(event.site,), daemon=True).start()

    def keep_up(site_id: str) -> None:
        # An authenticated site's node stays "online" at the SuperLink until it misses two
        # heartbeats (about 60 s): until then a restarted SuperNode cannot activate and exits.
        # Start it again every few seconds, as a service manager would, until it stays up.
        while not finished.is_set():
            if nodes[site_id].poll() is not None:
                start_site(site_id, mode="a")
            finished.wait(3.0)

    returning: set[str] = set()
    finished = threading.Event()

    started: list[subprocess.Popen] = []
    report = layout.report_json
    log_path = layout.flower_log
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    crashed = False
    try:
        database = ["--database", str((deploy_dir / "superlink.db").resolve())]
        superlink = start(
            [str(binaries / "flower-superlink"), *security, *(database if superlink_db else []),
             "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", str(superlink_port)],
            "superlink.log", "a" if resume else "w",
        )  # fmt: skip
        _wait_for_port(superlink_port, superlink, deploy_dir / "superlink.log")
        if certificates is not None:
            for site_id in site_ids:  # the strangers' keys are never registered
                register_site(certificates, site_id, env, deploy_dir)
        for site_id in site_ids + strangers:
            start_site(site_id, "a" if resume else "w")
        run_config = _flower_run_config(config, run_dir, resume=resume).resolve()
        flwr = shutil.which("flwr") or str(binaries / "flwr")
        command = [flwr, "run", str(PROJECT_ROOT), CONNECTION, "--stream",
                   "--run-config", str(run_config)]  # fmt: skip
        try:
            stream_flwr(command, env, log_path, started, on_line)  # the report is the proof
        except ServerStopped:
            crashed = True
            raise
    finally:
        finished.set()
        signal.signal(signal.SIGTERM, previous)
        # Everything here and what it started (SuperExec, ClientApp processes) carries the
        # run's FLWR_HOME; the drill's server side goes down as in a crash, without a goodbye.
        stop_run_processes(flwr_home, grace=10.0, crash=crashed)
        for process in started:  # (reaped; one that slipped through is killed first)
            if process.poll() is None:
                _kill_group(process, signal.SIGKILL)
            process.wait()
    write_sites(load_world(world_root), run_dir)  # now with the sites' store sizes
    if not report.exists():
        cause = flower_failure(log_path)
        raise SimulationError(
            "the deployed run did not finish" + (f": {cause}" if cause else "")
            + f"; see {log_path} and {deploy_dir}/*.log"
        )  # fmt: skip
    return report


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to a process started in its own session and to everything in its group."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
