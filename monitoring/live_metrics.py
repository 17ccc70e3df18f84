"""Custom Prometheus metrics from the Python-backend models (Triton's metrics API).

Counters appear on Triton's metrics endpoint (port 8002) beside its own nv_* metrics,
labelled by model and version. Feature and score bins come from the version's reference
profile, so `monitoring.drift` can compare live counts with it bin for bin.

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
import pandas as pd

from monitoring.profile import ReferenceProfile
from recsys.contract import OOV_INDEX, PROFILE_FILE, FeatureSpec
from recsys.schema import FeatureSchema

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
    """Counter families for one model version; metrics per label set are created once."""

    def __init__(self, pb_utils: Any, model: str, version: str) -> None:
        self._pb = pb_utils
        self._labels = {"model": model, "version": version}
        self._families = {
            name: pb_utils.MetricFamily(
                name=name, description=text, kind=pb_utils.MetricFamily.COUNTER
            )
            for name, text in FAMILIES.items()
        }
        self._metrics: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def increment(self, family: str, amount: float, **labels: str) -> None:
        if amount <= 0:
            return
        key = (family, tuple(sorted(labels.items())))
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._families[family].Metric(labels={**self._labels, **labels})
            self._metrics[key] = metric
        metric.increment(float(amount))

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
        _count_user_features(metrics, profile, raw, categorical, spec, schema)
    except Exception:
        metrics.log_failure("counting user features (monitoring.live_metrics)")


def _count_user_features(
    metrics: LiveMetrics,
    profile: ReferenceProfile | None,
    raw: dict[str, np.ndarray],
    categorical: np.ndarray,
    spec: FeatureSpec,
    schema: FeatureSchema,
) -> None:
    metrics.increment("recsys_requests_total", len(categorical))
    monitored = schema.monitored()
    tracked = {schema.users.id} | {n for n, f in monitored.items() if f.kind == "categorical"}
    for name, width, start in zip(spec.categorical, spec.widths, spec.offsets(), strict=True):
        if name in tracked and width == 1:
            oov = int(np.count_nonzero(categorical[:, start] == OOV_INDEX))
            metrics.increment("recsys_oov_total", oov, feature=name)
    for name in monitored:
        metrics.increment("recsys_missing_total", int(pd.isna(raw[name]).sum()), feature=name)
    if profile is None:
        return
    for feature in profile.features:
        for label, count in feature.counts(raw[feature.name]).items():
            metrics.increment("recsys_feature_bin_total", count, feature=feature.name, bin=label)


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
        _count_results(metrics, profile, scores, deciles, top_k)
    except Exception:
        metrics.log_failure("counting results (monitoring.live_metrics)")


def _count_results(
    metrics: LiveMetrics,
    profile: ReferenceProfile | None,
    scores: Sequence[np.ndarray],
    deciles: Sequence[np.ndarray],
    top_k: Sequence[int],
) -> None:
    metrics.increment("recsys_short_results_total",
                      sum(len(s) < k for s, k in zip(scores, top_k, strict=True)))  # fmt: skip
    served = np.concatenate(list(deciles)) if deciles else np.empty(0, dtype=np.int8)
    for decile, count in zip(*np.unique(served, return_counts=True), strict=True):
        metrics.increment("recsys_served_items_total", int(count), popularity_decile=str(decile))
    if profile is None or not scores:
        return
    for label, count in profile.scores.counts(np.concatenate(list(scores))).items():
        metrics.increment("recsys_score_bin_total", count, bin=label)
