"""A deployed camera site's long-lived worker.

Flower's Deployment Engine starts a new ClientApp process for every message. For a site that
process would import torch and load the site's features every round (measured: a deployed round
of 8 default sites took 4x the simulated one). Instead, the ClientApp (client.app) hands the
message content to the site's worker, which keeps torch, the encoder and the site's data loaded
between messages, and runs the very same code (client.site) the simulation runs in process.

- One worker per site, Flower run and app version: its address is a hash of the feature
  store, the run id and the folder the app's code is installed in, so a new run or new code
  gets a new worker.
- It listens on an abstract Unix socket (Linux), this machine only; every connection
  authenticates with a random 32-byte key in a file beside the store that only the site's user
  can read (`<store>.worker-<hash>.key`, mode 0600).
- The first message starts it (under a file lock, so two messages never start two); its log is
  `<store>.worker.log`.
- It exits when the process that started it (the SuperNode's SuperExec) is gone, or after
  `site-worker-idle` seconds (node config, default 900) without a message.
- It computes with `federation.cpus_per_site` threads, and the site workers of one machine
  compute at most CPUs / threads at a time (cpu_slot), as the Simulation Engine schedules
  sites: sites on their own machines are not affected.
- A failure inside the worker comes back as an error the ClientApp raises, so Flower replies
  with an error as it would for an in-process failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

from common.errors import LatentveilError
from common.runconfig import run_config_from_context, site_paths

IDLE_SECONDS = 900.0
START_SECONDS = 120.0  # a worker imports torch and may load a large store before it listens
CODE_DIR = Path(__file__).resolve().parents[1]  # the folder `client` is imported from


class WorkerError(LatentveilError):
    """The site's worker could not be reached, or failed on a message."""


def _identity(store: Path, run_id: int) -> str:
    text = f"{store.resolve()}|{run_id}|{CODE_DIR}|{sys.executable}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _address(identity: str) -> str:
    return f"\0latentveil-site-{identity}"  # abstract namespace: no file, no path length limit


def _key_file(store: Path, identity: str) -> Path:
    return store.with_name(f"{store.stem}.worker-{identity}.key")


def _serialize(content: RecordDict) -> bytes:
    return recorddict_to_proto(content).SerializeToString()


def _deserialize(data: bytes) -> RecordDict:
    proto = RecordDictProto()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)


def call(kind: str, content: RecordDict, context: Context) -> RecordDict:
    """Run handler `kind` (client.site.HANDLERS) on `content` in the site's worker, starting the
    worker if it is not running; returns the reply content. Runs in Flower's ClientApp
    process, which must not import torch (common.runconfig)."""
    config = run_config_from_context(context.run_config, check_names=False)
    _, _, store = site_paths(context.node_config, context.run_config, config)
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    identity = _identity(store, context.run_id)
    idle = float(context.node_config.get("site-worker-idle", IDLE_SECONDS))
    request = {
        "kind": kind,
        "content": _serialize(content),
        "run_id": int(context.run_id),
        "node_id": int(context.node_id),
        "node_config": dict(context.node_config),
        "run_config": dict(context.run_config),
    }
    threads = max(1, int(config.federation.cpus_per_site))
    connection = _connect(store, identity, idle, threads)
    try:
        connection.send(request)
        status, payload = connection.recv()
    except (EOFError, OSError) as error:
        raise WorkerError(f"the site's worker stopped during a {kind} message: {error}") from None
    finally:
        connection.close()
    if status != "ok":
        raise WorkerError(f"the site's worker failed on a {kind} message: {payload}")
    return _deserialize(payload)


def _try_connect(identity: str, key_file: Path) -> Connection | None:
    try:
        key = key_file.read_bytes()
        return Client(_address(identity), family="AF_UNIX", authkey=key)
    except (FileNotFoundError, ConnectionRefusedError, OSError, EOFError):
        return None


def _connect(store: Path, identity: str, idle: float, threads: int) -> Connection:
    key_file = _key_file(store, identity)
    connection = _try_connect(identity, key_file)
    if connection is not None:
        return connection
    with open(store.with_name(f"{store.stem}.worker.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others find it running
        connection = _try_connect(identity, key_file)
        if connection is not None:
            return connection
        process = _spawn(store, identity, key_file, idle, threads)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            connection = _try_connect(identity, key_file)
            if connection is not None:
                return connection
            if process.poll() is not None:
                break
            time.sleep(0.1)
    log = store.with_name(f"{store.stem}.worker.log")
    raise WorkerError(f"the site's worker did not start; see {log}")


def _spawn(
    store: Path, identity: str, key_file: Path, idle: float, threads: int
) -> subprocess.Popen:
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    env = dict(os.environ)
    for variable, value in thread_environment(threads).items():
        env.setdefault(variable, value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_DIR), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "client.worker", "--identity", identity,
               "--key-file", str(key_file), "--parent", str(os.getppid()),
               "--idle", str(idle)]  # fmt: skip
    with open(store.with_name(f"{store.stem}.worker.log"), "a") as log:
        return subprocess.Popen(
            command, cwd=CODE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def thread_environment(threads: int) -> dict[str, str]:
    """`threads` (`federation.cpus_per_site`) for every numeric library of a site's process, as
    the Simulation Engine gives each site (Ray sets OMP_NUM_THREADS to an actor's CPUs).
    Without it, sites that share a machine spin OpenMP threads against each other: measured 4x
    slower rounds with 8 sites on 2 cores."""
    return {
        variable: str(max(1, int(threads)))
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }


def default_slots() -> int:
    """Sites of this machine that may compute at once: CPUs / this process's threads."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, threads))


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def cpu_slot(slots: int) -> Iterator[None]:
    """Hold one of this machine's `slots` site slots while computing (file locks shared by
    every site worker of this user): sites that share a machine compute at most `slots` at a
    time, as the Simulation Engine schedules them (one CPU each); a site alone on its machine
    always finds one free."""
    folder = Path(tempfile.gettempdir()) / f"latentveil-site-slots-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    handles = [open(folder / f"slot-{i}.lock", "w") for i in range(max(1, slots))]
    try:
        while True:
            for handle in handles:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                return
            time.sleep(0.05)
    finally:
        for handle in handles:
            handle.close()


def serve(identity: str, key_file: Path, parent: int, idle: float, slots: int) -> None:
    """The worker's loop: one message at a time, until its parent is gone or it idles."""
    key = key_file.read_bytes()
    listener = Listener(_address(identity), family="AF_UNIX", authkey=key)
    state = {"last": time.monotonic(), "busy": False}

    def watch() -> None:
        while True:
            time.sleep(1.0)
            quiet = not state["busy"] and time.monotonic() - state["last"] > idle
            if not is_alive(parent) or quiet:
                key_file.unlink(missing_ok=True)
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    from client.site import HANDLERS  # torch, the encoder, the site's data: loaded once here

    print(f"site worker {identity} ready (pid {os.getpid()}, parent {parent})", flush=True)
    while True:
        try:
            connection = listener.accept()
        except (OSError, EOFError) as error:  # a client that failed to authenticate
            print(f"refused a connection: {error}", flush=True)
            continue
        state["busy"] = True
        try:
            with connection:
                request: dict[str, Any] = connection.recv()
                try:
                    context = Context(
                        run_id=request["run_id"],
                        node_id=request["node_id"],
                        node_config=request["node_config"],
                        state=RecordDict(),
                        run_config=request["run_config"],
                    )
                    with cpu_slot(slots):
                        reply = HANDLERS[request["kind"]](_deserialize(request["content"]), context)
                    connection.send(("ok", _serialize(reply)))
                except Exception as error:
                    traceback.print_exc()
                    connection.send(("error", f"{type(error).__name__}: {error}"))
        except (OSError, EOFError) as error:
            print(f"lost a connection: {error}", flush=True)
        finally:
            state["busy"] = False
            state["last"] = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description="a deployed site's worker (client.worker)")
    parser.add_argument("--identity", required=True)
    parser.add_argument("--key-file", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS)
    parser.add_argument("--slots", type=int, default=0, help="0 = CPUs / threads per site")
    args = parser.parse_args()
    slots = args.slots or default_slots()
    serve(args.identity, args.key_file, args.parent, args.idle, slots)


if __name__ == "__main__":
    main()
