"""What stands between a user and Flower's sharp edges: one-line causes, no shared SuperLink,
a printed `flwr run` command that is complete."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from common.config import load_config
from simulations.simulate import (
    _alive,
    _other_local_superlinks,
    _run_processes,
    _with_descendants,
    flower_failure,
    flwr_command,
    stop_run_processes,
    stream_flwr,
)
from tests.paths import CONFIG_DIR


def test_the_flower_log_shows_each_line_while_the_run_goes_on(tmp_path):
    # A run's progress is read from flower.log while it runs (tail -f, the SIGTERM test below);
    # a block-buffered log showed a small run's rounds only at its end. The "run" here prints a
    # round line, then looks for it in the log before it goes on.
    log = tmp_path / "flower.log"
    script = (
        "import pathlib, sys, time\n"
        "print('round 1', flush=True)\n"
        "deadline = time.monotonic() + 10\n"
        "while 'round 1' not in pathlib.Path(sys.argv[1]).read_text():\n"
        "    if time.monotonic() > deadline:\n"
        "        print('the log did not show round 1'); sys.exit(3)\n"
        "    time.sleep(0.05)\n"
        "print('seen', flush=True)\n"
    )
    started: list[subprocess.Popen] = []
    code = stream_flwr([sys.executable, "-c", script, str(log)], dict(os.environ), log, started)
    assert code == 0, log.read_text()
    assert log.read_text() == "round 1\nseen\n"


def test_the_cause_of_a_failed_flower_run_is_its_last_exception_line(tmp_path):
    log = tmp_path / "flower.log"
    log.write_text(
        "INFO :      Starting Flower ServerApp\n"
        "Traceback (most recent call last):\n"
        '  File "server/app.py", line 10, in main\n'
        "common.evaluation.EvaluationError: evaluation set not found: runs/x/evaluation_set.npz\n"
        "ERROR :     ServerApp thread raised an exception\n"
    )
    assert flower_failure(log) == (
        "common.evaluation.EvaluationError: evaluation set not found: runs/x/evaluation_set.npz"
    )
    log.write_text("INFO :      all fine\n")
    assert flower_failure(log) == ""
    assert flower_failure(tmp_path / "missing.log") == ""


def test_another_runs_local_superlink_is_found(tmp_path):
    fake = tmp_path / "flower-superlink"
    fake.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(fake), "--insecure", "--simulation"])
    try:
        deadline = time.monotonic() + 10
        while process.pid not in _other_local_superlinks(tmp_path / "home"):
            assert time.monotonic() < deadline, "the running SuperLink was not found"
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait()
    assert process.pid not in _other_local_superlinks(tmp_path / "home")


def test_the_printed_flwr_command_names_everything_flwr_needs(tmp_path):
    config = load_config(CONFIG_DIR / "default.yaml")
    command = flwr_command(config, tmp_path / "run").splitlines()[0]
    words = shlex.split(command)
    env = dict(word.split("=", 1) for word in words[:2])
    assert env["FLWR_HOME"] == str((tmp_path / "run" / "flwr_home").resolve())
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert words[2:4] == ["flwr", "run"] and os.path.isfile(
        os.path.join(words[4], "pyproject.toml")
    )
    assert words[words.index("--run-config") + 1] == f'run-dir="{(tmp_path / "run").resolve()}"'
    federation = words[words.index("--federation-config") + 1]
    assert federation == "num-supernodes=8 client-resources-num-cpus=1"


def test_everything_a_run_started_is_stopped_even_what_ignores_sigterm(tmp_path):
    home = tmp_path / "flwr_home"
    env = {**os.environ, "FLWR_HOME": str(home)}
    # a process that ignores SIGTERM and has a child of its own (as the SuperLink has Ray),
    # and a grandchild started with a cleaned environment (as Ray starts its agents)
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], env={})\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 10
    while len(_run_processes(home)) < 2:
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.1)
    started = _with_descendants(_run_processes(home))
    assert len(started) == 3  # the one with a cleaned environment is found by its parent
    stop_run_processes(home, grace=1.0)
    parent.wait(timeout=5)
    assert [pid for pid in started if _alive(pid)] == []
    assert _run_processes(home) == []


def test_a_process_that_misses_the_first_sigterm_stops_at_the_second_not_the_grace(tmp_path):
    home = tmp_path / "flwr_home"
    env = {**os.environ, "FLWR_HOME": str(home)}
    # the first SIGTERM is lost (as a SuperLink caught inside a lock loses it), the second stops
    # it; and one that stops at once
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: signal.signal(signal.SIGTERM, signal.SIG_DFL))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stubborn = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    assert stubborn.stdout.readline() == b"ready\n"
    stop_run_processes(home, grace=5.0)
    # both ended by SIGTERM: neither waited out the grace to be SIGKILLed
    assert stubborn.wait(timeout=5) == plain.wait(timeout=5) == -signal.SIGTERM


def _prepared_tiny_run(tmp_path, name):
    from simulations.cli import main

    run = tmp_path / name
    args = ["prepare", "--config", str(CONFIG_DIR / "tiny.yaml"), "--out", str(run), "--quiet",
            "--set", "evaluation.attackers=mlp,logistic"]  # fmt: skip
    return run, main(args)


@pytest.mark.integration
def test_the_flwr_command_prepare_prints_runs_the_app_to_its_report(tmp_path, capsys):
    run, code = _prepared_tiny_run(tmp_path, "run")
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    command = next(line for line in printed if "flwr run" in line).strip()
    home = (run / "flwr_home").resolve()
    try:
        result = subprocess.run(command, shell=True, cwd=tmp_path, timeout=600,
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:]
        assert (run / "report.json").is_file()
    finally:
        stop_run_processes(home)  # the printed note says flwr run leaves its SuperLink
    assert _run_processes(home) == []


@pytest.mark.integration
def test_sigterm_to_simulate_stops_every_process_of_the_run(tmp_path):
    run = tmp_path / "run"
    home = (run / "flwr_home").resolve()
    command = [sys.executable, "-c", "import sys; from simulations.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "simulate", "--config",
               str(CONFIG_DIR / "tiny.yaml"), "--out", str(run), "--quiet",
               "--set", "evaluation.attackers=mlp,logistic",
               "--set", "federation.rounds=30"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        log = run / "flower.log"
        while not (log.is_file() and "round   1" in log.read_text(errors="replace")):
            assert process.poll() is None, process.stdout.read()[-2000:]
            assert time.monotonic() < deadline, "the run did not reach round 1"
            time.sleep(0.5)
        running = _run_processes(home)
        assert running, "no process of the run was found while it trained"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        stop_run_processes(home)
    assert process.returncode != 0
    assert "interrupted" in output
    assert [pid for pid in _with_descendants(running) if _alive(pid)] == []
    assert _run_processes(home) == []
    assert not (run / "report.json").exists()
