import subprocess
import sys

import pytest

from serving.launcher import TritonServer
from tests.conftest import TrainedSet


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_works() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "recommend" in result.stdout and "--protocol" in result.stdout


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_cli_recommends_over_both_protocols(
    protocol: str, trained: TrainedSet, triton: TritonServer
) -> None:
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    user = int(trained.data.valid["user_id"].iloc[0])
    result = run_cli(
        "--protocol", protocol, "--url", url, "recommend", "--user-id", str(user), "--top-k", "4"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" item ") == 4
    assert "model set version 1" in result.stdout


@pytest.mark.server
def test_cli_reports_a_bad_request_clearly(triton: TritonServer) -> None:
    result = run_cli("--url", triton.grpc_url, "recommend", "--user-id", "5", "--top-k", "0")
    assert result.returncode == 1
    assert "top_k must be between" in result.stderr
