"""Soak test: drive the ensemble at ~70% of its measured saturation and watch errors and RSS.

    python -m serving.soak --duration 600            # starts a server on model_repository/
    python -m serving.soak --quick                   # ~30 s, what the test suite runs
    python -m serving.soak --url 127.0.0.1:8001 --duration 3600 --json results/soak.json

1. Saturation: closed loops of 1, 2, 4, ... concurrent clients (the project's client, one
   per thread) until throughput stops growing; the best rate is the saturation rate.
2. Soak: an open loop sends requests on a fixed schedule at `--load` x saturation, so a
   slow server shows up as latency (measured from the scheduled send time) rather than
   as a quietly lower rate. Requests mix known and unknown users, top_k, exclusions and
   feature overrides; every answer is checked (length, catalog ids, exclusions, finite
   scores in [0, 1]) and a wrong answer counts as an error. The client does not retry, so
   every failure is counted.
3. Memory: RSS of tritonserver and all its children (the Python-backend stubs) is sampled
   throughout; growth compares the median of the first window after warm-up with the
   median of the last window.

Passes (exit 0) with zero errors and RSS growth below `--max-rss-growth` (5%). A client
thread, scheduled send or the RSS sampler dying of an unexpected exception (not a
counted client error) aborts the run with LoadThreadError: its numbers would be wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from client.recommender_client import (
    FeatureValue,
    Recommendation,
    RecommendationRequest,
    RecommenderClient,
    RecommenderClientError,
)
from recsys.contract import (
    CATALOG_FILE,
    ENSEMBLE_NAME,
    SCHEMA_FILE,
    USER_TABLE_FILE,
    Catalog,
    read_schema,
)
from recsys.settings import PROJECT_ROOT, load_settings
from serving.launcher import TritonServer

UNKNOWN_USER_SHARE = 0.1
OVERRIDE_SHARE = 0.2


@dataclass(frozen=True)
class SoakPlan:
    duration_s: float  # the paced soak phase
    warmup_s: float  # excluded from the RSS growth baseline
    saturation_window_s: float  # per concurrency level
    concurrency_levels: tuple[int, ...]
    load_fraction: float = 0.7
    sample_interval_s: float = 1.0

    @staticmethod
    def for_run(duration_s: float, quick: bool, load_fraction: float) -> SoakPlan:
        if quick:
            return SoakPlan(20.0, 5.0, 2.5, (1, 4), load_fraction, 0.5)
        return SoakPlan(
            duration_s, max(30.0, 0.1 * duration_s), 10.0, (1, 2, 4, 8, 16), load_fraction
        )


class Workload:
    """Realistic, checkable requests drawn from the repository's own user table and catalog."""

    def __init__(self, repository: Path, seed: int = 0) -> None:
        version_dir = repository / "user_features" / latest_version(repository / "user_features")
        schema = read_schema(version_dir / SCHEMA_FILE)
        users = pd.read_parquet(version_dir / USER_TABLE_FILE)
        self.user_ids = users[schema.users.id].to_numpy(np.int64)
        catalog = Catalog.load(
            repository / "reorder" / latest_version(repository / "reorder") / CATALOG_FILE
        )
        self.item_ids = catalog.item_ids
        self.catalog = set(self.item_ids.tolist())
        # Overrides send values the table holds, for up to two overridable features.
        self.override_values = {
            name: values
            for name, feature in list(schema.user_overrides())[:2]
            if feature.kind != "multi_hot"
            and len(values := users[name].dropna().drop_duplicates().tolist())
        }
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def next_request(self) -> RecommendationRequest:
        with self._lock:  # numpy generators are not thread-safe
            rng = self._rng
            if rng.random() < UNKNOWN_USER_SHARE:
                user = -int(rng.integers(1, 1_000_000))  # negative: never a known id
            else:
                user = int(rng.choice(self.user_ids))
            exclude = rng.choice(self.item_ids, size=int(rng.integers(0, 6)), replace=False)
            features: dict[str, FeatureValue] = {}
            if rng.random() < OVERRIDE_SHARE:
                for name, values in self.override_values.items():
                    value = values[int(rng.integers(len(values)))]
                    features[name] = value.item() if hasattr(value, "item") else value
            return RecommendationRequest(
                user, int(rng.integers(1, 21)), [int(i) for i in exclude], features
            )

    def check(self, request: RecommendationRequest, answer: Recommendation) -> str | None:
        """Why an answer is wrong, or None."""
        ids, scores = answer.item_ids, np.asarray(answer.scores)
        if not 0 < len(ids) <= request.top_k:
            return f"{len(ids)} items for top_k={request.top_k}"
        if not set(ids) <= self.catalog:
            return "item ids outside the catalog"
        if set(ids) & set(request.exclude_item_ids):
            return "an excluded item was returned"
        if not (np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))):
            return "scores not finite probabilities"
        if answer.model_version < 1:
            return f"model_version {answer.model_version}"
        return None


def latest_version(model_dir: Path) -> str:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"{model_dir} has no numbered version directory")
    return str(max(versions))


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, latency_s: float, error: str | None) -> None:
        with self.lock:
            self.sent += 1
            if error is None:
                self.ok += 1
                self.latencies_s.append(latency_s)
            else:
                self.errors[error] += 1


class Driver:
    """Sends workload requests with one client per thread (the HTTP client is not thread-safe)."""

    def __init__(self, url: str, protocol: str, workload: Workload) -> None:
        self.url, self.protocol, self.workload = url, protocol, workload
        self._local = threading.local()
        self._clients: list[RecommenderClient] = []
        self._lock = threading.Lock()

    def _client(self) -> RecommenderClient:
        client = getattr(self._local, "client", None)
        if client is None:
            # No retries: a soak must see every failure, not hide it behind a second try.
            client = RecommenderClient(self.url, self.protocol, timeout_s=10.0, retries=0)  # type: ignore[arg-type]
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def send_one(self, stats: LoadStats, scheduled: float | None = None) -> None:
        request = self.workload.next_request()
        start = time.monotonic() if scheduled is None else scheduled
        error = None
        try:
            answer = self._client().recommend_batch([request])[0]
            error = self.workload.check(request, answer)
            error = None if error is None else f"wrong answer: {error}"
        except RecommenderClientError as exc:
            error = f"{exc.code}: {str(exc)[:160]}"
        stats.record(time.monotonic() - start, error)

    def close(self) -> None:
        for client in self._clients:
            client.close()


class LoadThreadError(RuntimeError):
    """A thread sending load or sampling RSS died of an exception: the run is invalid (its
    rate, error count or memory samples would silently cover less than they claim)."""


def closed_loop_rate(driver: Driver, concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests/s with `concurrency` clients each sending back to back; and the errors seen.
    Raises LoadThreadError if a client thread died (send_one counts client errors itself)."""
    stats = LoadStats()
    stop = time.monotonic() + seconds
    died: list[BaseException] = []

    def loop() -> None:
        try:
            while time.monotonic() < stop and not died:
                driver.send_one(stats)
        except BaseException as exc:  # re-raised below, in the caller's thread
            died.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if died:
        raise LoadThreadError(f"a closed-loop client thread died: {died[0]!r}") from died[0]
    return stats.ok / (time.monotonic() - started), sum(stats.errors.values())


def measure_saturation(driver: Driver, plan: SoakPlan) -> tuple[float, dict[int, float]]:
    """The best closed-loop rate over the concurrency levels (stops once it stops growing)."""
    rates: dict[int, float] = {}
    for concurrency in plan.concurrency_levels:
        rate, errors = closed_loop_rate(driver, concurrency, plan.saturation_window_s)
        rates[concurrency] = rate
        print(f"  concurrency {concurrency:>2}: {rate:7.1f} req/s ({errors} errors)", flush=True)
        if len(rates) > 1 and rate < 1.1 * max(list(rates.values())[:-1]):
            break
    return max(rates.values()), rates


def open_loop(driver: Driver, rate: float, seconds: float, workers: int) -> LoadStats:
    """Send at `rate` req/s on a fixed schedule for `seconds`; latency counts from the
    scheduled time, so queueing behind a slow server is not hidden. Raises LoadThreadError
    (and stops sending) once a send died of an exception: a future's exception is otherwise
    kept in the future and never seen."""
    stats = LoadStats()
    interval = 1.0 / rate
    died: list[BaseException] = []

    def note_failure(future: Future[None]) -> None:
        if (exc := future.exception()) is not None:
            died.append(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.monotonic()
        n = 0
        while (scheduled := start + n * interval) < start + seconds and not died:
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(driver.send_one, stats, scheduled).add_done_callback(note_failure)
            n += 1
    if died:
        raise LoadThreadError(f"a soak request died: {died[0]!r}") from died[0]
    return stats


class RssSampler:
    """RSS of a process and all its descendants, sampled on a background thread."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []  # (monotonic time, bytes)
        self.exception: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        root = psutil.Process(self.pid)
        total = 0
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.samples.append((time.monotonic(), self.rss()))
                self._stop.wait(self.interval_s)
        except BaseException as exc:  # re-raised by __exit__, in the soak's thread
            self.exception = exc

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.exception is not None and exc_type is None:  # else keep the soak's own error
            raise LoadThreadError(f"the RSS sampler died: {self.exception!r}") from self.exception


def rss_growth(samples: list[tuple[float, int]], after: float) -> tuple[int, int, float]:
    """(baseline, final, growth): medians of the first and last windows after `after`, each a
    tenth of the remaining samples (at least 3), so one allocator spike does not decide."""
    values = [rss for t, rss in samples if t >= after]
    if len(values) < 2:
        raise ValueError("too few RSS samples after warm-up: run longer")
    window = max(3, len(values) // 10)
    baseline = int(statistics.median(values[:window]))
    final = int(statistics.median(values[-window:]))
    return baseline, final, (final - baseline) / baseline


@dataclass(frozen=True)
class SoakReport:
    saturation_rps: float
    saturation_by_concurrency: dict[int, float]
    target_rps: float
    achieved_rps: float
    duration_s: float
    requests: int
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float
    p99_ms: float
    rss_baseline_mb: float
    rss_final_mb: float
    rss_growth: float
    max_rss_growth: float

    @property
    def passed(self) -> bool:
        return self.errors == 0 and self.rss_growth < self.max_rss_growth

    def summary(self) -> str:
        kinds = "".join(f"\n    {n:>6} x {kind}" for kind, n in self.error_kinds.items())
        return (
            f"saturation {self.saturation_rps:.1f} req/s; soak at {self.target_rps:.1f} req/s "
            f"for {self.duration_s:.0f} s: {self.achieved_rps:.1f} req/s achieved\n"
            f"  requests {self.requests}, errors {self.errors}{kinds}\n"
            f"  latency p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms\n"
            f"  server RSS after warm-up {self.rss_baseline_mb:.0f} MiB -> "
            f"{self.rss_final_mb:.0f} MiB at the end ({100 * self.rss_growth:+.2f}%, "
            f"limit {100 * self.max_rss_growth:.0f}%)\n"
            f"  {'PASS' if self.passed else 'FAIL'}"
        )


def run_soak(
    url: str,
    protocol: str,
    server_pid: int,
    repository: Path,
    plan: SoakPlan,
    max_rss_growth: float = 0.05,
) -> SoakReport:
    driver = Driver(url, protocol, Workload(repository))
    try:
        print("measuring saturation (closed loop):", flush=True)
        saturation, by_concurrency = measure_saturation(driver, plan)
        target = plan.load_fraction * saturation
        workers = 2 * max(plan.concurrency_levels)
        print(f"soaking at {target:.1f} req/s for {plan.duration_s:.0f} s ...", flush=True)
        with RssSampler(server_pid, plan.sample_interval_s) as sampler:
            started = time.monotonic()
            stats = open_loop(driver, target, plan.duration_s, workers)
            elapsed = time.monotonic() - started
        baseline, final, growth = rss_growth(sampler.samples, started + plan.warmup_s)
    finally:
        driver.close()
    latencies = np.array(stats.latencies_s or [float("nan")]) * 1000
    mib = 1024 * 1024
    return SoakReport(
        saturation,
        by_concurrency,
        target,
        stats.sent / elapsed,
        elapsed,
        stats.sent,
        sum(stats.errors.values()),
        dict(stats.errors.most_common()),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        baseline / mib,
        final / mib,
        growth,
        max_rss_growth,
    )


def listening_pid(url: str) -> int:
    """The pid of the process listening on `url`'s port (to sample its RSS)."""
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise SystemExit(f"no process listens on port {port}: pass --server-pid")


@contextlib.contextmanager
def target_server(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """(url, server pid): the one named on the command line, or one started here."""
    if args.url is not None:
        yield args.url, args.server_pid or listening_pid(args.url)
        return
    if not (args.repository / ENSEMBLE_NAME).exists():
        raise SystemExit(f"{args.repository} holds no model repository: run `make repository`")
    settings = load_settings(args.config)
    with TritonServer(
        args.repository, settings.server, PROJECT_ROOT / "results" / "soak" / "tritonserver.log"
    ) as server:
        assert server.process is not None
        url = server.grpc_url if args.protocol == "grpc" else server.http_url
        yield url, server.process.pid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=None, help="host:port of a running server")
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="tritonserver's pid for RSS (default: the one on --url's port)",
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--config", type=Path, default=None, help="settings YAML")
    parser.add_argument("--duration", type=float, default=600.0, help="soak seconds")
    parser.add_argument("--quick", action="store_true", help="~30 s in all (CI)")
    parser.add_argument("--load", type=float, default=0.7, help="fraction of saturation")
    parser.add_argument("--max-rss-growth", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.load <= 1 or args.duration <= 0:
        raise SystemExit("--load must be in (0, 1] and --duration > 0")
    plan = SoakPlan.for_run(args.duration, args.quick, args.load)
    with target_server(args) as (url, pid):
        report = run_soak(url, args.protocol, pid, args.repository, plan, args.max_rss_growth)
    print(report.summary())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**asdict(report), "passed": report.passed}, indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
