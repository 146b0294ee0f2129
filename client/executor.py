"""A deployed camera site's ClientApp executor: the whole site in one long-lived process.

Flower's SuperNode turns every message it receives into a *task* on its Runtime API. In its
default `subprocess` isolation, its SuperExec starts a new `flwr-clientapp` process for every
task: Python and Flower imported again, the app bundle unpacked again, the message pulled over
HTTP and handed on to the site's worker (client.worker). Measured with 8 sites on 2 cores, that
was 2 to 5 s of CPU per message before any training.

With `flower-supernode --isolation process`, the SuperNode leaves the tasks to an executor that
runs on its own, and this is one: it acquires the SuperNode's tasks over the Runtime API as
`flower-superexec` does, and runs each as `flwr-clientapp` would (pull the message and context,
run the ClientApp of client.app with its mods, push the reply, push the task's result), but in
this process, where torch, the encoder and the site's features stay loaded between rounds.

    flower-supernode --isolation process --port 9094 ...   # and beside it:
    python -m client.executor --runtime-api-address 127.0.0.1:9094 [--parent SUPERNODE_PID]

- It runs the latentveil installed here, not the app bundle the run ships: a run of another
  app or version is answered with an error naming both (run that SuperNode in its default
  subprocess isolation instead).
- It computes with the threads of OMP_NUM_THREADS (`federation.cpus_per_site` in
  deploy-local), and the executors and workers of one machine compute at most CPUs / threads
  sites at a time (client.worker.cpu_slot), as the Simulation Engine schedules sites.
- A failure in the app is replied as Flower replies it (an error message, the task marked
  failed), and the executor carries on with the next task.
- It exits when the SuperNode it serves (`--parent`) is gone, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path

POLL_SECONDS = 0.5  # between two task requests while idle (flower-superexec: 1 s); 0.05 s
# cost the 8 SuperNodes of a default deployment more CPU than their messages
APP_NAME = "latentveil"


class _Stop(Exception):
    pass


def _installed_version() -> str:
    try:
        return metadata.version(APP_NAME)
    except metadata.PackageNotFoundError:
        return ""


def app_mismatch(fab_id: str, fab_version: str, installed: str | None = None) -> str | None:
    """Why this executor must not run a run's app (its id and version), or None."""
    installed = _installed_version() if installed is None else installed
    name = fab_id.rsplit("/", 1)[-1]
    if name != APP_NAME or (installed and fab_version != installed):
        return (
            f"this site's executor (client.executor) runs {APP_NAME} {installed or '?'} as "
            f"installed here, and the run's app is {fab_id} {fab_version}: install the same "
            "version at the site, or run its SuperNode in the default subprocess isolation"
        )
    return None


def _client(address: str, root_certificates: bytes | None, token: str | None = None):
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    component = "flwr-clientapp" if token else "SuperExec"
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=root_certificates is None,
        root_certificates=root_certificates,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def run_task(address: str, token: str, root_certificates: bytes | None, slots: int) -> str:
    """One task, as `flwr-clientapp` runs it, in this process; returns its final status."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from client.app import app, keep_in_process
    from client.worker import cpu_slot

    keep_in_process()
    client = _client(address, root_certificates, token)

    def heartbeat() -> bool:
        try:
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except Exception:
            return False
        return True

    beat = HeartbeatSender(heartbeat)
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        beat.start()
        message, context, run, _fab = pull_task_input(client)
        refusal = app_mismatch(run.fab_id, run.fab_version)
        if refusal:
            raise RuntimeError(refusal)
        with cpu_slot(slots):
            reply = app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as error:
        traceback.print_exc()
        details = f"{type(error)}:<'{error}'>"
        if message is not None:
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            push_task_output(client, context, status, details)
            if beat.is_running:
                beat.stop()
            client.close()
    return str(status)


def serve(
    address: str,
    *,
    root_certificates: bytes | None = None,
    parent: int | None = None,
    slots: int = 0,
    poll: float = POLL_SECONDS,
) -> None:
    """Acquire and run the SuperNode's ClientApp tasks until stopped."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    import client.site  # noqa: F401 - torch and the site code, loaded once, before any task
    from client.worker import default_slots, is_alive

    slots = slots or default_slots()
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent is not None:

        def watch() -> None:
            while not stop.is_set():
                time.sleep(0.5)
                if not is_alive(parent):
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        threading.Thread(target=watch, daemon=True).start()
    tasks = _client(address, root_certificates)
    print(f"site executor ready (pid {os.getpid()}, Runtime API {address})", flush=True)
    try:
        while not stop.is_set():
            try:
                acquired = tasks.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
            except Exception as error:
                print(f"no task from the SuperNode: {error}", flush=True)
                time.sleep(1.0)
                continue
            if not (acquired.HasField("task") and acquired.token):
                time.sleep(poll)
                continue
            started = time.perf_counter()
            status = run_task(address, acquired.token, root_certificates, slots)
            print(
                f"task {acquired.task.task_id}: {status} in {time.perf_counter() - started:.2f} s",
                flush=True,
            )
    except _Stop:
        pass
    finally:
        tasks.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m client.executor",
        description="run a site's ClientApp tasks in one long-lived process, for a "
        "`flower-supernode --isolation process` (client.executor)",
    )
    parser.add_argument("--runtime-api-address", required=True, help="HOST:PORT of the "
                        "SuperNode's Runtime API (its --host and --port)")  # fmt: skip
    parser.add_argument("--root-certificates", type=Path, default=None,
                        help="CA certificate of a Runtime API served with TLS")  # fmt: skip
    parser.add_argument("--parent", type=int, default=None, help="exit when this PID is gone")
    parser.add_argument("--slots", type=int, default=0, help="0 = CPUs / threads per site")
    args = parser.parse_args(argv)
    certificates = args.root_certificates.read_bytes() if args.root_certificates else None
    serve(
        args.runtime_api_address,
        root_certificates=certificates,
        parent=args.parent,
        slots=args.slots,
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
