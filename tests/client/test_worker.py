"""A deployed site's long-lived worker (client.worker): the same reply as in process, one
worker per site and run that stays up between messages, its failures as clear errors, its key
readable by the site's user only, and its exit when idle."""

import os
import stat
import time

import numpy as np
import pytest
from flwr.app import Context

from client.app import train
from client.worker import WorkerError, _address, _identity, _key_file, _try_connect
from common.model import build_model
from common.weights import shareable_state
from tests.client.test_client_app import CONFIG, D, make_context, make_site, round_message


def _context(site, store, worker: bool, idle: float = 20.0) -> Context:
    return make_context(
        site, store, CONFIG, run_id=11, **{"site-worker": worker, "site-worker-idle": idle}
    )


def _arrays(reply):
    return {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}


def _worker_pid(store, run_id: int = 11) -> int:
    identity = _identity(store, run_id)
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            try:
                cmdline = open(f"/proc/{proc}/cmdline", "rb").read()
            except OSError:
                continue
            if b"client.worker" in cmdline and identity.encode() in cmdline:
                return int(proc)
    return 0


def test_the_worker_replies_as_the_site_does_in_process_and_stays_up(tmp_path):
    site, store = make_site(tmp_path)
    sent = shareable_state(build_model(D, CONFIG, seed=CONFIG.seed))
    local = _arrays(train(round_message(CONFIG, sent), _context(site, store, worker=False)))
    context = _context(site, store, worker=True, idle=3.0)
    try:
        remote = _arrays(train(round_message(CONFIG, sent), context))
        assert list(remote) == list(local)
        for name, array in local.items():
            np.testing.assert_array_equal(remote[name], array)
        pid = _worker_pid(store)
        assert pid, "no worker process"
        again = _arrays(train(round_message(CONFIG, sent), context))
        assert _worker_pid(store) == pid  # the same worker served the second message
        assert all(np.array_equal(again[k], remote[k]) for k in remote)
        key = _key_file(store, _identity(store, 11))
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # a failure in the worker is an error naming its cause, and the worker stays up
        bad = dict(sent)
        bad[next(iter(bad))] = np.zeros(3, np.float32)
        with pytest.raises(WorkerError, match="ShareableStateError"):
            train(round_message(CONFIG, bad), context)
        assert _worker_pid(store) == pid
        # idle for longer than site-worker-idle: it exits and removes its key
        deadline = time.monotonic() + 30
        while _worker_pid(store) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _worker_pid(store)
        assert not key.exists()
        assert _try_connect(_identity(store, 11), key) is None
    finally:
        pid = _worker_pid(store)
        if pid:
            os.kill(pid, 9)


def test_a_wrong_key_is_refused(tmp_path):
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    site, store = make_site(tmp_path)
    sent = shareable_state(build_model(D, CONFIG, seed=CONFIG.seed))
    context = _context(site, store, worker=True, idle=3.0)
    try:
        train(round_message(CONFIG, sent), context)
        with pytest.raises((AuthenticationError, EOFError, OSError)):
            Client(_address(_identity(store, 11)), family="AF_UNIX", authkey=b"x" * 32)
    finally:
        pid = _worker_pid(store)
        if pid:
            os.kill(pid, 9)


def test_site_workers_of_one_machine_compute_at_most_slots_at_a_time(tmp_path, monkeypatch):
    import threading

    from client.worker import cpu_slot

    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    running, peak, lock = [0], [0], threading.Lock()

    def site():
        with cpu_slot(2):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.2)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=site) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 2
