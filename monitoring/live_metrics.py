"""Custom Prometheus metrics from the Python-backend models (Triton's metrics API).

Counters appear on Triton's metrics endpoint (port 8002) beside its own nv_* metrics,
labelled by model and version. Feature and score bins come from the version's reference
profile, so `monitoring.drift` can compare live counts with it bin for bin.

Counting runs on every served batch: the counter layout is compiled once per model
version (monitoring/batch_counts.py) and a batch costs a few numpy calls plus one
increment per non-zero counter. With `monitoring.sample_rate` below 1 only that share of
batches is counted, each count scaled by 1/rate, so every counter stays an unbiased
estimate of the full count (recsys_requests_total is always exact).

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
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.batch_counts import Key, ResultCountPlan, UserCountPlan
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

    `sample_rate` None reads `monitoring.sample_rate` from the configuration the server was
    started with ($RECSYS_CONFIG or config/default.yaml)."""

    def __init__(
        self, pb_utils: Any, model: str, version: str, sample_rate: float | None = None
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
        self.sample_rate = load_settings().monitoring.sample_rate if sample_rate is None else (
            sample_rate)  # fmt: skip
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        self._rng = np.random.default_rng()

    def increment(self, family: str, amount: float, **labels: str) -> None:
        if amount > 0:
            self._increment((family, tuple(sorted(labels.items()))), amount)

    def _increment(self, key: Key, amount: float) -> None:
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._families[key[0]].Metric(labels={**self._labels, **dict(key[1])})
            self._metrics[key] = metric
        metric.increment(float(amount))

    def add(self, keys: Sequence[Key], counts: np.ndarray, scale: float = 1.0) -> None:
        """Increment the counter of every slot whose count is positive."""
        for slot in np.flatnonzero(counts > 0):
            self._increment(keys[slot], float(counts[slot]) * scale)

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

    def log_failure(self, what: str) -> None:
        """Log the exception being handled at error level in the server log. Called from an
        `except` block; never raises, since a request must not fail for want of a log line."""
        message = (
            f"model {self._labels['model']!r} version {self._labels['version']}: {what} "
            f"failed; the request is answered without these counts:\n{traceback.format_exc()}"
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
        if not metrics.sampled():
            metrics.add(plan.keys[:1], np.array([len(categorical)], dtype=np.float64))
            return
        counts = plan.count(raw, categorical)
        metrics.add(plan.keys[:1], counts[:1])
        metrics.add(plan.keys[1:], counts[1:], 1.0 / metrics.sample_rate)
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
        metrics.add(plan.keys, plan.count(scores, deciles, top_k), 1.0 / metrics.sample_rate)
    except Exception:
        metrics.log_failure("counting results (monitoring.live_metrics)")
