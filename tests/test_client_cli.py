import json
import subprocess
import sys

import numpy as np
import pytest

from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender
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


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_cli_feature_overrides_are_typed_from_the_servers_metadata(
    protocol: str, trained: TrainedSet, triton: TritonServer, in_process: InProcessRecommender
) -> None:
    """--feature NAME=VALUE, repeatable: a string and a number feature, converted to the
    types the server declares; the answer equals the in-process chain's."""
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    user = int(trained.data.valid["user_id"].iloc[0])
    args = ["--json", "--protocol", protocol, "--url", url, "recommend", "--user-id", str(user)]
    result = run_cli(*args, "--top-k", "5", "--feature", "country=country_02",
                     "--feature", "age=61.5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    overrides = {"country": np.array(["country_02"]), "age": np.array([61.5], np.float32)}
    want = in_process.recommend(np.array([user]), 5, overrides=overrides)[0]
    assert json.loads(result.stdout)["item_ids"] == want.item_ids.tolist()


@pytest.mark.server
def test_cli_names_the_features_a_server_takes(triton: TritonServer) -> None:
    result = run_cli("--url", triton.grpc_url, "recommend", "--user-id", "5",
                     "--feature", "shoe_size=44")  # fmt: skip
    assert result.returncode == 1
    assert "unknown user feature(s) ['shoe_size']" in result.stderr
    assert "'country'" in result.stderr and "'age'" in result.stderr
    bad_number = run_cli("--url", triton.grpc_url, "recommend", "--user-id", "5",
                         "--feature", "age=old")  # fmt: skip
    assert bad_number.returncode == 1
    assert "feature 'age' takes FP32 values" in bad_number.stderr
