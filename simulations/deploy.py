"""`latentveil deploy-local`: the federation on Flower's Deployment Engine, on this machine.

    latentveil deploy-local --config CFG --sites N --out RUN --insecure

The same ServerApp and ClientApp as `simulate`, but each site is a real `flower-supernode`
process and the server a real `flower-superlink`, talking over 127.0.0.1 as they would across
hosts:

1. the run folder is prepared as `simulate` prepares it (world, central evaluation set), except
   that no site's features are extracted here: each site encodes its own videos, through its
   edge encoder, on its first round (client.app);
2. a SuperLink starts with its state in the run folder (`deploy/superlink.db`, so registrations
   and runs survive a restart) and runtime dependency installation disabled;
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
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

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


def deploy_local(
    config: RunConfig,
    run_dir: str | Path,
    sites: int | None = None,
    insecure: bool = False,
    progress: bool = True,
    unregistered: int = 0,
) -> Path:
    """Run the federation on a local SuperLink and one SuperNode per site; return report.json.

    By default the SuperLink serves TLS and admits only SuperNodes whose public key is
    registered (`flwr supernode register`): keys and certificates are made in
    `<run>/deploy/certs` (simulations.certs). `insecure` drops both. `unregistered` starts that
    many extra SuperNodes whose keys were never registered (to show they are refused)."""
    run_dir = Path(run_dir)
    if sites is not None:
        config = replace(config, world=replace(config.world, sites=sites))
    layout = RunLayout(run_dir)
    site_ids = prepare_deployment(config, run_dir, progress)
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

    def start(command: list[str], log_name: str) -> tuple[subprocess.Popen, Path]:
        log = deploy_dir / log_name
        with open(log, "w") as handle:
            process = subprocess.Popen(
                command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=run_dir
            )
        started.append(process)
        return process, log

    started: list[subprocess.Popen] = []
    report = layout.report_json
    log_path = layout.flower_log
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        superlink, superlink_log = start(
            [str(binaries / "flower-superlink"), *security,
             "--database", str((deploy_dir / "superlink.db").resolve()),
             "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", str(superlink_port)],
            "superlink.log",
        )  # fmt: skip
        _wait_for_port(superlink_port, superlink, superlink_log)
        if certificates is not None:
            for site_id in site_ids:  # the strangers' keys are never registered
                register_site(certificates, site_id, env, deploy_dir)
        for site_id, port in zip(site_ids + strangers, node_ports, strict=True):
            # a stranger claims to be the first site, with a store of its own
            site_dir = world_root / (site_ids[0] if site_id in strangers else site_id)
            node_config = (
                f'site-dir="{site_dir}" feature-store="{layout.site_store(site_id).resolve()}"'
            )
            node_security = (
                ["--insecure"]
                if certificates is None
                else ["--root-certificates", str(certificates.ca_cert.resolve()),
                      "--auth-supernode-private-key",
                      str(certificates.site_key(site_id).resolve())]
            )  # fmt: skip
            start(
                [str(binaries / "flower-supernode"), *node_security,
                 "--superlink", f"127.0.0.1:{superlink_port}",
                 "--port", str(port), "--node-config", node_config],
                f"{site_id}.log",
            )  # fmt: skip
        run_config = _flower_run_config(config, run_dir, resume=False).resolve()
        flwr = shutil.which("flwr") or str(binaries / "flwr")
        command = [flwr, "run", str(PROJECT_ROOT), CONNECTION, "--stream",
                   "--run-config", str(run_config)]  # fmt: skip
        stream_flwr(command, env, log_path, started)  # the report is the proof of success
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        stop_run_processes(flwr_home)  # what they started (SuperExec, ClientApp processes)
    write_sites(load_world(world_root), run_dir)  # now with the sites' store sizes
    if not report.exists():
        cause = flower_failure(log_path)
        raise SimulationError(
            "the deployed run did not finish" + (f": {cause}" if cause else "")
            + f"; see {log_path} and {deploy_dir}/*.log"
        )  # fmt: skip
    return report
