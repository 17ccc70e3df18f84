"""A background thread that dies fails what it belongs to, instead of a warning and less
load than claimed: the tests' traffic generators (test_versions.Traffic,
test_faults.Load) and the soak's client threads, scheduled sends and RSS sampler. No
server: fake clients and drivers that raise."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace, TracebackType
from typing import Any

import pytest

from serving import soak
from tests import test_versions
from tests.test_faults import Load
from tests.threads import BackgroundThreadError, CheckedThread


def test_a_checked_thread_raises_its_exception_on_check_and_join() -> None:
    thread = CheckedThread(lambda: 1 / 0, name="divider")
    thread.start()
    with pytest.raises(BackgroundThreadError, match="'divider' died: ZeroDivisionError") as info:
        thread.join(timeout=10)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(BackgroundThreadError):
        thread.check()


def test_a_checked_thread_that_does_not_stop_fails_the_join() -> None:
    release = threading.Event()
    thread = CheckedThread(release.wait, name="stuck")
    thread.start()
    with pytest.raises(BackgroundThreadError, match="'stuck' did not stop"):
        thread.join(timeout=0.1)
    release.set()
    thread.join(timeout=10)


class BrokenClient:
    """A RecommenderClient stand-in that answers `answers` times, then fails with an error
    that is not a client error (a bug in the test's own code, say)."""

    def __init__(self, answers: int = 0) -> None:
        self.answers = answers

    def recommend(self, user: int, top_k: int) -> Any:
        if self.answers <= 0:
            raise ValueError("not a client error")
        self.answers -= 1
        return SimpleNamespace(item_ids=[1, 2], model_version=1)

    def is_ready(self) -> bool:
        raise ValueError("not a client error")

    def close(self) -> None:
        pass

    def __enter__(self) -> BrokenClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


def test_a_dead_load_thread_fails_count_and_stop() -> None:
    load = Load([BrokenClient(answers=3)], {7: [1, 2]})  # type: ignore[list-item]
    deadline = time.monotonic() + 10
    while load.threads[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(BackgroundThreadError, match="ValueError"):
        load.count("ok")
    with pytest.raises(BackgroundThreadError, match="ValueError"):
        load.stop()


def test_a_dead_traffic_thread_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # 25 answers: enough for Traffic's start, then is_ready (every 20th request) raises.
    monkeypatch.setattr(test_versions, "RecommenderClient", lambda *a, **k: BrokenClient(25))
    server = SimpleNamespace(grpc_url="grpc:1", http_url="http:1")
    traffic = test_versions.Traffic(server, user=7)  # type: ignore[arg-type]
    with pytest.raises(BackgroundThreadError, match="ValueError"), traffic:
        time.sleep(1.0)  # the threads reach their 20th request and die


def test_traffic_whose_clients_die_at_once_fails_without_waiting_for_the_stall_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(test_versions, "RecommenderClient", lambda *a, **k: 1 / 0)
    server = SimpleNamespace(grpc_url="grpc:1", http_url="http:1")
    started = time.monotonic()
    with (
        pytest.raises(BackgroundThreadError, match="ZeroDivisionError"),
        test_versions.Traffic(server, user=7),  # type: ignore[arg-type]
    ):
        pass
    assert time.monotonic() - started < 30  # not the 60 s "traffic stalled" timeout


class BrokenDriver:
    """A soak Driver stand-in whose send_one fails with an unexpected exception."""

    def __init__(self, fail_after: int) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.fail_after = fail_after

    def send_one(self, stats: soak.LoadStats, scheduled: float | None = None) -> None:
        with self.lock:
            self.calls += 1
            calls = self.calls
        if calls > self.fail_after:
            raise KeyError("bug in the workload check")
        stats.record(0.001, None)


def test_soak_closed_loop_fails_when_a_client_thread_dies() -> None:
    rate, errors = soak.closed_loop_rate(BrokenDriver(10**9), 2, 0.2)  # type: ignore[arg-type]
    assert rate > 0 and errors == 0
    with pytest.raises(soak.LoadThreadError, match="bug in the workload check"):
        soak.closed_loop_rate(BrokenDriver(50), 2, 0.5)  # type: ignore[arg-type]


def test_soak_open_loop_fails_and_stops_sending_when_a_send_dies() -> None:
    driver = BrokenDriver(5)
    with pytest.raises(soak.LoadThreadError, match="bug in the workload check"):
        soak.open_loop(driver, rate=200.0, seconds=5.0, workers=2)  # type: ignore[arg-type]
    assert driver.calls < 200  # stopped early, not after all 1000 scheduled sends


def test_soak_rss_sampler_that_dies_fails_the_soak() -> None:
    class BrokenSampler(soak.RssSampler):
        def rss(self) -> int:
            raise PermissionError("no access to /proc/<pid>/status")

    with (
        pytest.raises(soak.LoadThreadError, match="RSS sampler died"),
        BrokenSampler(pid=1, interval_s=0.01),
    ):
        time.sleep(0.2)
