"""A deployed site's executor (client.executor). Its whole path (SuperNode in process
isolation, tasks acquired over the Runtime API, replies pushed) runs in the integration tests of
tests/simulations/test_deploy.py; here what it refuses and how it is started."""

import subprocess
import sys

from client.executor import app_mismatch


def test_the_executor_runs_only_the_app_and_version_installed_at_the_site():
    assert app_mismatch("latentveil/latentveil", "0.1.0", installed="0.1.0") is None
    other_version = app_mismatch("latentveil/latentveil", "0.2.0", installed="0.1.0")
    assert "latentveil 0.1.0" in other_version and "latentveil/latentveil 0.2.0" in other_version
    assert "subprocess isolation" in other_version
    other_app = app_mismatch("flwrlabs/quickstart", "0.1.0", installed="0.1.0")
    assert other_app and "flwrlabs/quickstart" in other_app


def test_the_executor_needs_the_supernodes_runtime_api_address():
    done = subprocess.run(
        [sys.executable, "-m", "client.executor"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--runtime-api-address" in done.stderr
