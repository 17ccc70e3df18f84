"""The launcher never leaves an orphaned tritonserver behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.conftest import TrainedSet, free_port


@pytest.mark.server
def test_server_dies_with_a_killed_launcher(trained: TrainedSet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from recsys.settings import load_settings
        from serving.launcher import TritonServer
        server = load_settings().server.model_copy(update={{
            "http_port": {free_port()}, "grpc_port": {free_port()},
            "metrics_port": {free_port()}}})
        launcher = TritonServer(Path({str(trained.repository)!r}), server,
                                Path({str(tmp_path / "log.txt")!r}))
        launcher.start()
        print(launcher.process.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(server_pid)
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the launcher
        parent.wait(timeout=10)
        deadline = time.monotonic() + 60
        while psutil.pid_exists(server_pid) and time.monotonic() < deadline:
            if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.5)
        gone = not psutil.pid_exists(server_pid) or (
            psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
        )
        assert gone, "tritonserver outlived its launcher"
    finally:
        parent.kill()


def test_serve_refuses_a_repository_built_on_another_schema(trained: TrainedSet) -> None:
    from serving.launcher import schema_mismatch

    assert schema_mismatch(trained.repository, "synthetic") is None
    problem = schema_mismatch(trained.repository, "movielens")
    assert problem is not None
    assert "serves schema 'synthetic' (version 1), not 'movielens'" in problem
    assert "users: feature 'gender' is new" in problem
