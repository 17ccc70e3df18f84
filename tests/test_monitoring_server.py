"""Live model-quality metrics on the real server, and the drift command reading them."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest

from client.recommender_client import RecommendationRequest, RecommenderClient
from monitoring.drift import compare, parse_metrics, subtract
from monitoring.profile import ReferenceProfile
from recsys.contract import PROFILE_FILE
from recsys.settings import load_settings
from serving.launcher import TritonServer
from tests.conftest import TrainedSet

pytestmark = pytest.mark.server
BATCH = 32
T = TypeVar("T")


def scrape(server: TritonServer) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return response.read().decode()


# The models send their live counts every monitoring.flush_interval_s (read, as the stubs
# do, from $RECSYS_CONFIG or the default file): a scrape lags the answers by up to that.
FLUSH_S = load_settings().monitoring.flush_interval_s


def settled(read: Callable[[], T], done: Callable[[T], bool]) -> T:
    """`read()` once `done` holds, or its last value after a few flush intervals. The
    caller asserts on the value returned, so too many counts fail as well as too few."""
    deadline = time.monotonic() + 5 * FLUSH_S + 5
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def at_rest(server: TritonServer) -> str:
    """A scrape once the counts of earlier traffic (other tests on this server) have all
    arrived: the recsys_* lines no longer change over a flush interval."""

    def ours(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("recsys_")]

    text = scrape(server)
    deadline = time.monotonic() + 10 * FLUSH_S + 10
    while time.monotonic() < deadline:
        time.sleep(1.5 * FLUSH_S)
        previous, text = text, scrape(server)
        if ours(previous) == ours(text):
            break
    return text


def send(server: TritonServer, trained: TrainedSet, shifted: bool, users: int = 320) -> None:
    rows = trained.data.valid[["user_id"]].merge(trained.data.users, on="user_id").sample(
        n=users, random_state=3)  # fmt: skip
    with RecommenderClient(server.grpc_url, "grpc") as client:
        for start in range(0, users, BATCH):
            part = rows.iloc[start : start + BATCH]
            requests = []
            for row in part.itertuples():
                features: dict[str, float | str] = {}
                if shifted:
                    age = 60.0 if np.isnan(row.age) else min(row.age + 25.0, 150.0)
                    features = {"age": age, "device": "smart-tv"}
                requests.append(RecommendationRequest(int(row.user_id), 10, features=features))
            client.recommend_batch(requests)


@pytest.fixture(scope="module")
def profile(trained: TrainedSet) -> ReferenceProfile:
    path = trained.repository / "user_features" / "1" / PROFILE_FILE
    assert path.exists(), "each model version carries its reference profile"
    return ReferenceProfile.load(path)


def test_unshifted_traffic_moves_the_counters_and_flags_nothing(
    trained: TrainedSet, triton: TritonServer, profile: ReferenceProfile
) -> None:
    before = parse_metrics(at_rest(triton), "1")
    send(triton, trained, shifted=False)
    live = settled(
        lambda: subtract(parse_metrics(scrape(triton), "1"), before),
        lambda c: sum(c.get("age", {}).values()) >= 320
        and sum(c.get("score", {}).values()) >= 3200,
    )
    assert sum(live["age"].values()) == 320
    assert sum(live["score"].values()) == 3200
    flagged = {r.feature for r in compare(profile, live, trained.settings.monitoring)
               if r.drifting}  # fmt: skip
    assert flagged == set()


def test_shifted_traffic_is_named_by_the_drift_command(
    trained: TrainedSet, triton: TritonServer
) -> None:
    command = [sys.executable, "-m", "monitoring.drift", "--profile",
               str(trained.repository / "user_features" / "1" / PROFILE_FILE),
               "--metrics-url", triton.metrics_url, "--window", "12", "--version", "1"]  # fmt: skip
    report = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the command takes its first scrape
    send(triton, trained, shifted=True)
    out, err = report.communicate(timeout=120)
    assert report.returncode == 1, out + err
    drifting = out.strip().splitlines()[-1]
    assert drifting.startswith("drifting features: age, device"), out


def test_unknown_users_count_as_out_of_vocabulary(
    trained: TrainedSet, triton: TritonServer
) -> None:
    def oov(text: str) -> float:
        for line in text.splitlines():
            if line.startswith("recsys_oov_total{") and 'feature="user_id"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = oov(at_rest(triton))
    with RecommenderClient(triton.grpc_url, "grpc") as client:
        client.recommend_batch([RecommendationRequest(-(i + 1), 5) for i in range(7)])
    assert settled(lambda: oov(scrape(triton)) - before, lambda n: n >= 7) == 7
