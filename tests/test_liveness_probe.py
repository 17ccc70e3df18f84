"""The chart's liveness probe script, run for real against a server whose stub dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from recsys.contract import STAGE_MODEL_NAMES
from serving.launcher import TritonServer
from tests.conftest import TrainedSet, free_port

pytestmark = pytest.mark.server
PROBE = Path(__file__).resolve().parent.parent / "helm" / "recsys-triton" / "files" / (
    "liveness_probe.py")  # fmt: skip


def probe(server: TritonServer) -> subprocess.CompletedProcess[str]:
    assert server.process is not None
    return subprocess.run(
        [
            sys.executable,
            str(PROBE),
            "--port",
            str(server.server.http_port),
            "--parent-pid",
            str(server.process.pid),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_probe_fails_once_a_stub_is_dead(trained: TrainedSet, tmp_path: Path) -> None:
    settings = trained.settings.server.model_copy(
        update={"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    )
    with TritonServer(trained.repository, settings, tmp_path / "log.txt") as server:
        assert probe(server).returncode == 0
        assert server.process is not None
        stubs = [c for c in psutil.Process(server.process.pid).children()
                 if "triton_python_backend_stub" in " ".join(c.cmdline())]  # fmt: skip
        assert len(stubs) == len(STAGE_MODEL_NAMES)  # one Python-backend stub per stage
        os.kill(stubs[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        result = probe(server)
        while result.returncode == 0 and time.monotonic() < deadline:
            time.sleep(1)
            result = probe(server)
        assert result.returncode == 1
        assert "dead Python-backend stub" in result.stdout
        assert str(stubs[0].pid) in result.stdout


def test_probe_fails_when_nothing_listens() -> None:
    result = subprocess.run([sys.executable, str(PROBE), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 1
    assert "unreachable" in result.stdout
