"""Real overload at the real server: about 3x its saturation rate, driven by Debian's `hey`.

What the queue policy (config/default.yaml serving.queue_policy) has to deliver:
- every request is answered, with a result (200) or a retriable refusal (503, or 429): no
  connection errors, no timeouts, no 500s;
- the p99 latency of the successful answers stays within a small multiple of the p99 at
  concurrency 1 (without a queue bound every request waits behind a growing queue: about
  60x here);
- the server recovers: once the load stops, sequential requests are all answered.

Measured over HTTP (hey speaks HTTP/1.1 to Triton's KServe-v2 endpoint). `hey -o csv` lists
only requests that got an HTTP answer, so sending a fixed number (`-n`) and counting the rows
tells how many got none.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving.launcher import TritonServer
from tests.conftest import TrainedSet

pytestmark = pytest.mark.server

HEY = shutil.which("hey") or "/usr/bin/hey"
RETRIABLE = {200, 429, 503}
# The "small multiple": successful p99 under overload vs the p99 at concurrency 1. Was 10x
# while the concurrency-1 p99 was 16-19 ms (five stages). The four-stage chain answers at
# 4.7-8.5 ms, but an overloaded request still pays the HTTP front end and hey sharing the
# two cores, and the budget is per step (4 queues): 43.6 and 124.6 ms, i.e. 9.3x and 14.7x
# (2026-11-22, one CI run failed at 10x). An unbounded queue gives 76.6x, so the bound
# still fails without the queue policy.
P99_RATIO_BOUND = 20.0
OVERLOAD_FACTOR = 3.0
OVERLOAD_WORKERS = 192
OVERLOAD_SECONDS = 12.0
# The latency budget the overloading clients send (Triton's `timeout` request parameter, per
# step's queue): this multiple of the concurrency-1 p99, at least MIN_BUDGET_US.
BUDGET_MULTIPLE = 1.5
MIN_BUDGET_US = 10_000


@dataclass(frozen=True)
class Run:
    """One hey run: status and latency (s) of every answered request, and how many were sent."""

    sent: int
    statuses: list[int]
    latencies: list[float]
    elapsed_s: float

    @property
    def unanswered(self) -> int:
        return self.sent - len(self.statuses)

    def ok_latencies(self) -> list[float]:
        return sorted(t for s, t in zip(self.statuses, self.latencies, strict=True) if s == 200)

    def ok_p99(self) -> float:
        ok = self.ok_latencies()
        assert ok, "no successful answer at all"
        return ok[min(len(ok) - 1, math.ceil(0.99 * len(ok)) - 1)]

    def ok_per_s(self) -> float:
        return len(self.ok_latencies()) / self.elapsed_s

    def count(self, status: int) -> int:
        return sum(1 for s in self.statuses if s == status)


def body(user_id: int, timeout_us: int | None = None) -> str:
    """A KServe-v2 JSON request; `timeout_us` is the request's own queue timeout (Triton's
    `timeout` parameter, honoured with allow_timeout_override, passed to every step)."""
    request: dict[str, object] = {
        "inputs": [
            {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": [user_id]},
            {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": [10]},
        ]
    }
    if timeout_us is not None:
        request["parameters"] = {"timeout": timeout_us}
    return json.dumps(request)


def hey(url: str, payload: Path, requests: int, workers: int, rate: float | None = None) -> Run:
    """`hey -n requests -c workers [-q rate per worker]`, POSTing `payload`; parsed."""
    assert requests % workers == 0, "hey sends requests // workers per worker"
    args = [HEY, "-n", str(requests), "-c", str(workers), "-t", "30", "-o", "csv",
            "-m", "POST", "-T", "application/json", "-D", str(payload)]  # fmt: skip
    if rate is not None:
        args += ["-q", f"{rate:.3f}"]
    started = time.monotonic()
    result = subprocess.run([*args, url], capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    return Run(
        sent=requests,
        statuses=[int(r["status-code"]) for r in rows],
        latencies=[float(r["response-time"]) for r in rows],
        elapsed_s=elapsed,
    )


@pytest.fixture(scope="module")
def endpoint(
    trained: TrainedSet, triton: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    payload = tmp_path_factory.mktemp("overload") / "request.json"
    payload.write_text(body(known_user(trained)))
    return f"http://{triton.http_url}/v2/models/recommender/infer", payload


def known_user(trained: TrainedSet) -> int:
    return int(trained.data.valid["user_id"].iloc[0])


def test_hey_is_installed() -> None:
    assert Path(HEY).is_file(), "hey is missing: run scripts/setup.sh (apt-get install hey)"


def test_overload_is_answered_fast_or_refused_retriably_and_recovers(
    endpoint: tuple[str, Path], trained: TrainedSet, tmp_path: Path
) -> None:
    """The clients under overload state their latency budget, as a production caller with
    an SLO does: Triton's `timeout` request parameter (`allow_timeout_override`), here
    BUDGET_MULTIPLE x the concurrency-1 p99. The server default (1 s) only guards against a
    stuck stage: this shared host stalls a process for ~0.5 s now and then even when idle,
    so a tight server-wide timeout refused idle requests."""
    url, payload = endpoint
    policy = trained.settings.serving.queue_policy
    hey(url, payload, 200, 1)  # warm-up: first batches, connection setup
    single = hey(url, payload, 800, 1)
    assert single.unanswered == 0 and set(single.statuses) == {200}, set(single.statuses)
    baseline_p99 = single.ok_p99()

    # Saturation: closed loop at a concurrency well above what one instance per stage
    # batches away; its success rate is what the server can do.
    saturated = hey(url, payload, 2400, 16)
    capacity = saturated.ok_per_s()
    assert capacity > 0

    rate = OVERLOAD_FACTOR * capacity
    # hey sends requests // workers per worker: a multiple, so every request is sent.
    requests = OVERLOAD_WORKERS * math.ceil(rate * OVERLOAD_SECONDS / OVERLOAD_WORKERS)
    budget_us = max(MIN_BUDGET_US, int(BUDGET_MULTIPLE * baseline_p99 * 1e6))
    with_budget = tmp_path / "request_with_budget.json"
    with_budget.write_text(body(known_user(trained), budget_us))
    overload = hey(url, with_budget, requests, OVERLOAD_WORKERS, rate / OVERLOAD_WORKERS)
    offered = overload.sent / overload.elapsed_s
    ratio = overload.ok_p99() / baseline_p99
    summary = (
        f"concurrency-1 p99 {baseline_p99 * 1e3:.1f} ms; saturation {capacity:.0f} ok/s; "
        f"offered {offered:.0f}/s ({offered / capacity:.1f}x), answered "
        f"{overload.count(200)} ok, {overload.count(503)} x 503, {overload.count(429)} x 429, "
        f"{overload.unanswered} unanswered; successful p99 {overload.ok_p99() * 1e3:.1f} ms "
        f"= {ratio:.1f}x; goodput {overload.ok_per_s():.0f}/s; request timeout "
        f"{budget_us} us; queue policy {policy}"
    )
    print(summary)  # the numbers docs/README quote come from this line (pytest -s)

    assert overload.unanswered == 0, summary
    assert set(overload.statuses) <= RETRIABLE, f"{set(overload.statuses)}: {summary}"
    assert ratio <= P99_RATIO_BOUND, summary

    # Recovery: as soon as the load stops, requests are answered again, one after another.
    time.sleep(1.0)
    after = hey(url, payload, 100, 1)
    assert after.unanswered == 0 and set(after.statuses) == {200}, set(after.statuses)
