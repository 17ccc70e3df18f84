"""Custom Prometheus metrics from the Python-backend models (Triton's metrics API).

Counters appear on Triton's metrics endpoint (port 8002) beside its own nv_* metrics,
labelled by model and version. Feature and score bins come from the version's reference
profile, so `monitoring.drift` can compare live counts with it bin for bin.

Counting runs on every served batch: the counter layout is compiled once per model
version (monitoring/batch_counts.py) and a batch costs a few numpy calls whose result is
added to a buffer (monitoring/pending_counts.py). The buffer reaches Triton, one increment
per non-zero counter, from a daemon thread every `monitoring.flush_interval_s` seconds and
on finalize: each increment is a round trip from the stub to the server, which the
request path no longer makes. A scrape therefore lags the traffic by up to that interval.
With `monitoring.sample_rate` below 1 only that share of batches is counted, each count
scaled by 1/rate, so every counter stays an unbiased estimate of the full count
(recsys_requests_total is always exact).

    recsys_requests_total{model,version}                user rows seen
    recsys_feature_bin_total{model,version,feature,bin} raw request features, binned
    recsys_oov_total{model,version,feature}             ids/categories out of vocabulary
    recsys_missing_total{model,version,feature}         missing raw feature values
    recsys_score_bin_total{model,version,bin}           served scores, binned
    recsys_short_results_total{model,version}           answers with fewer than top_k items
    recsys_served_items_total{model,version,popularity_decile}  served items by popularity
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.batch_counts import Key, ResultCountPlan, UserCountPlan
from monitoring.pending_counts import PendingCounts, PeriodicFlush
from monitoring.profile import ReferenceProfile
from recsys.contract import PROFILE_FILE, FeatureSpec
from recsys.schema import FeatureSchema
from recsys.settings import load_settings

FAMILIES: dict[str, str] = {
    "recsys_requests_total": "User rows seen by the feature transform",
    "recsys_feature_bin_total": "Raw request feature values per reference-profile bin",
    "recsys_oov_total": "Categorical values mapped to the out-of-vocabulary index",
    "recsys_missing_total": "Raw feature values missing (null) after lookup and overrides",
    "recsys_score_bin_total": "Served scores per reference-profile bin",
    "recsys_short_results_total": "Answers with fewer items than top_k (exclusions)",
    "recsys_served_items_total": "Served items by training-popularity decile (0 = most popular)",
}


def load_profile(version_dir: Path) -> ReferenceProfile | None:
    """The version's reference profile, or None for versions built without one."""
    path = version_dir / PROFILE_FILE
    return ReferenceProfile.load(path) if path.exists() else None


class LiveMetrics:
    """Counter families for one model version; metrics per label set are created once.

    `sample_rate` and `flush_interval_s` None read `monitoring.sample_rate` and
    `monitoring.flush_interval_s` from the configuration the server was started with
    ($RECSYS_CONFIG or config/default.yaml). `close()` (the model's finalize) sends what is
    still buffered."""

    def __init__(
        self,
        pb_utils: Any,
        model: str,
        version: str,
        sample_rate: float | None = None,
        flush_interval_s: float | None = None,
    ) -> None:
        self._pb = pb_utils
        self._labels = {"model": model, "version": version}
        self._families = {
            name: pb_utils.MetricFamily(
                name=name, description=text, kind=pb_utils.MetricFamily.COUNTER
            )
            for name, text in FAMILIES.items()
        }
        self._metrics: dict[Key, Any] = {}
        self._plans: dict[tuple[int, ...], tuple[tuple[object, ...], Any]] = {}
        if sample_rate is None or flush_interval_s is None:
            configured = load_settings().monitoring
            sample_rate = configured.sample_rate if sample_rate is None else sample_rate
            flush_interval_s = (
                configured.flush_interval_s if flush_interval_s is None else flush_interval_s
            )
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if not flush_interval_s > 0.0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.sample_rate = sample_rate
        self.flush_interval_s = flush_interval_s
        self._rng = np.random.default_rng()
        self._pending = PendingCounts()
        # One flush at a time: the periodic one and close()'s must not send the same
        # Metric object's increments concurrently (pb_utils' Metric keeps per-call state).
        self._flush_lock = threading.Lock()
        self._flusher: PeriodicFlush | None = None
        self._closed = False

    def add(self, keys: tuple[Key, ...], counts: np.ndarray) -> None:
        """Buffer a batch's counts (aligned with `keys`) for the next flush. The flushing
        thread starts with the first counts, so a model that never counts has none."""
        self._pending.add(keys, counts)
        if self._flusher is None and not self._closed:
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._flush_lock:
            if self._flusher is None and not self._closed:
                name = f"live-metrics-{self._labels['model']}-{self._labels['version']}"
                self._flusher = PeriodicFlush(self.flush, self.flush_interval_s, name)
                self._flusher.start()

    def flush(self) -> None:
        """Send the buffered counts: one increment per non-zero counter.

        Never raises. If the metrics API fails, the counts not yet sent go back into the
        buffer for the next flush (the buffer is a fixed-size sum per counter, so keeping
        them costs no memory however long the API fails), and the failure is logged once
        per flush, at most once per interval. A count whose increment raised is counted
        as not delivered: Triton applies an increment only after the request arrives."""
        with self._flush_lock:
            entries = self._pending.take()
            try:
                for keys, counts in entries:
                    for slot in np.flatnonzero(counts > 0):
                        self._increment(keys[slot], float(counts[slot]))
                        counts[slot] = 0.0  # delivered: a retry must not send it again
            except Exception:
                self._pending.put_back(entries)
                self.log_failure(
                    "flushing the live counters (monitoring.live_metrics)",
                    "the counts not sent are kept for the next flush",
                )

    def close(self) -> None:
        """Stop the flushing thread and send what is left (the model's finalize)."""
        with self._flush_lock:
            self._closed = True
            flusher = self._flusher
        if flusher is not None:
            # Outside the lock: the thread may be inside flush(), which takes it.
            flusher.stop(timeout_s=max(10.0, 2 * self.flush_interval_s))
        self.flush()

    def _increment(self, key: Key, amount: float) -> None:
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._families[key[0]].Metric(labels={**self._labels, **dict(key[1])})
            self._metrics[key] = metric
        metric.increment(amount)

    def sampled(self) -> bool:
        """Whether this batch is counted (always, at the default rate 1)."""
        return self.sample_rate >= 1.0 or bool(self._rng.random() < self.sample_rate)

    def plan(self, sources: tuple[object, ...], build: Any) -> Any:
        """`build()` once per combination of `sources` (compared by identity: the model's
        profile, spec and schema objects live as long as the model version)."""
        ident = tuple(id(s) for s in sources)
        cached = self._plans.get(ident)
        if cached is None or any(a is not b for a, b in zip(cached[0], sources, strict=True)):
            cached = (sources, build())
            self._plans[ident] = cached
        return cached[1]

    def log_failure(
        self, what: str, outcome: str = "the request is answered without these counts"
    ) -> None:
        """Log the exception being handled at error level in the server log. Called from an
        `except` block; never raises, since a request must not fail for want of a log line
        (nor the flushing thread stop)."""
        message = (
            f"model {self._labels['model']!r} version {self._labels['version']}: {what} "
            f"failed; {outcome}:\n{traceback.format_exc()}"
        )
        with contextlib.suppress(Exception):
            self._pb.Logger.log_error(message)


def observe_user_features(
    metrics: LiveMetrics,
    profile: ReferenceProfile | None,
    raw: dict[str, np.ndarray],
    categorical: np.ndarray,
    spec: FeatureSpec,
    schema: FeatureSchema,
) -> None:
    """Count a batch of user rows: OOV ids and monitored categories, missing values of
    monitored features, and their values binned like the reference profile.

    Never raises: counters are a side channel, and an exception here would fail the batch
    of requests being answered (it is logged instead)."""
    try:
        plan: UserCountPlan = metrics.plan(
            (profile, spec, schema), lambda: UserCountPlan.compile(profile, spec, schema)
        )
        if metrics.sampled():
            counts = plan.count(raw, categorical)
            counts[1:] /= metrics.sample_rate  # slot 0, the rows seen, stays exact
        else:
            counts = np.zeros(len(plan.keys))
            counts[0] = len(categorical)
        metrics.add(plan.keys, counts)
    except Exception:
        metrics.log_failure("counting user features (monitoring.live_metrics)")


def observe_results(
    metrics: LiveMetrics,
    profile: ReferenceProfile | None,
    scores: Sequence[np.ndarray],
    deciles: Sequence[np.ndarray],
    top_k: Sequence[int],
) -> None:
    """One entry per answered user: its served scores and the items' popularity deciles.

    Never raises, like observe_user_features: a failing counter is logged, the answer sent."""
    try:
        if not metrics.sampled():
            return
        plan: ResultCountPlan = metrics.plan((profile,), lambda: ResultCountPlan.compile(profile))
        metrics.add(plan.keys, plan.count(scores, deciles, top_k) / metrics.sample_rate)
    except Exception:
        metrics.log_failure("counting results (monitoring.live_metrics)")
