"""The live model-quality counters never fail a request: an exception inside them is logged
through the model's pb_utils Logger and the observe_* call returns. Counts are buffered and
reach the metrics API only when flushed (every flush_interval_s, and on close), one
increment per counter. No server needed: a fake pb_utils stands in for
triton_python_backend_utils.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monitoring.batch_counts import Key, ResultCountPlan, UserCountPlan
from monitoring.live_metrics import LiveMetrics, observe_results, observe_user_features
from monitoring.profile import (
    MISSING,
    OTHER,
    FeatureProfile,
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
    score_profile,
)
from recsys.contract import OOV_INDEX, FeatureSpec
from recsys.schema import load_schema
from recsys.settings import SettingsError, load_settings
from tests.threads import CheckedThread

SCHEMA = load_schema("synthetic")
SPEC = FeatureSpec(("user_id", "country", "device", "zipcode"), (100, 13, 4, 2048), ("age",))


class FakePbUtils:
    """The parts of triton_python_backend_utils LiveMetrics uses; `broken` makes every
    Metric.increment raise, as a metrics API failing inside the stub would, and `fail_at`
    only the increment call with that number (0-based) after it is set."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.fail_at: int | None = None
        self.counts: dict[tuple[tuple[str, str], ...], float] = {}
        self.calls: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.errors: list[str] = []
        fake = self

        class Metric:
            def __init__(self, labels: dict[str, str]) -> None:
                self.key = tuple(sorted(labels.items()))

            def increment(self, amount: float) -> None:
                if fake.fail_at is not None:
                    fake.fail_at -= 1
                    if fake.fail_at < 0:
                        fake.fail_at = None
                        raise RuntimeError("metrics API unavailable")
                if fake.broken:
                    raise RuntimeError("metrics API unavailable")
                fake.calls[self.key] += 1
                fake.counts[self.key] = fake.counts.get(self.key, 0.0) + amount

        class MetricFamily:
            COUNTER = "counter"

            def __init__(self, name: str, description: str, kind: str) -> None:
                self.name = name

            def Metric(self, labels: dict[str, str]) -> Metric:  # noqa: N802 (pb_utils' name)
                return Metric({"family": self.name, **labels})

        class Logger:
            @staticmethod
            def log_error(message: str) -> None:
                fake.errors.append(message)

        self.MetricFamily = MetricFamily
        self.Logger = Logger


# Tests flush by hand: the periodic flush would fire only after an hour.
NEVER = 3600.0


def profile() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    return ReferenceProfile(
        (
            numeric_profile("age", rng.uniform(0, 90, 500)),
            categorical_profile("country", np.array(["a", "b", None], dtype=object)),
        ),
        score_profile(rng.uniform(0, 1, 500)),
    )


def user_batch() -> tuple[dict[str, np.ndarray], np.ndarray]:
    raw = {
        "age": np.array([30.0, np.nan]),
        "country": np.array(["a", "zz"], dtype=object),
        "device": np.array(["ios", None], dtype=object),
        "zipcode": np.array(["123", "456"], dtype=object),
    }
    return raw, np.array([[5, 1, 2, 3], [0, 0, 1, 7]], dtype=np.int64)


# One object, as a served model version holds one: counter plans are cached by identity.
PROFILE = profile()


def observe_both(metrics: LiveMetrics) -> None:
    raw, categorical = user_batch()
    observe_user_features(metrics, PROFILE, raw, categorical, SPEC, SCHEMA)
    observe_results(
        metrics, PROFILE, [np.array([0.9, 0.2]), np.array([0.5])],
        [np.array([0, 3], dtype=np.int8), np.array([9], dtype=np.int8)], [2, 3],
    )  # fmt: skip


def counter(pb: FakePbUtils, family: str, **labels: str) -> float:
    key = dict(family=family, model="model", version="1", **labels)
    return pb.counts.get(tuple(sorted(key.items())), 0.0)


def test_working_counters_count_and_log_nothing() -> None:
    pb = FakePbUtils()
    metrics = LiveMetrics(pb, "model", "1", flush_interval_s=NEVER)
    observe_both(metrics)
    metrics.close()
    assert pb.errors == []
    assert counter(pb, "recsys_requests_total") == 2
    assert counter(pb, "recsys_short_results_total") == 1


def test_batches_are_buffered_until_a_flush_sends_one_increment_per_counter() -> None:
    one, many = FakePbUtils(), FakePbUtils()
    single = LiveMetrics(one, "model", "1", flush_interval_s=NEVER)
    observe_both(single)
    single.flush()
    metrics = LiveMetrics(many, "model", "1", flush_interval_s=NEVER)
    for _ in range(7):
        observe_both(metrics)
    assert many.calls == Counter() and many.counts == {}, "no increment before a flush"
    metrics.flush()
    assert set(many.calls.values()) == {1}, "one increment per counter, not per batch"
    assert many.counts == {k: 7 * v for k, v in one.counts.items()}
    metrics.flush()  # nothing new: nothing sent
    assert set(many.calls.values()) == {1}
    observe_both(metrics)
    metrics.close()
    assert many.counts == {k: 8 * v for k, v in one.counts.items()}
    assert many.errors == []


@pytest.mark.parametrize("which", ["user_features", "results"])
def test_close_sends_what_is_buffered_and_stops_the_flushing_thread(which: str) -> None:
    pb = FakePbUtils()
    metrics = LiveMetrics(pb, "model", "1", flush_interval_s=NEVER)
    if which == "user_features":
        raw, categorical = user_batch()
        observe_user_features(metrics, profile(), raw, categorical, SPEC, SCHEMA)
    else:
        observe_results(metrics, None, [np.array([0.4])], [np.array([1], dtype=np.int8)], [5])
    flusher = metrics._flusher
    assert flusher is not None and flusher.is_alive()
    assert pb.counts == {}
    metrics.close()
    assert not flusher.is_alive()
    family = "recsys_requests_total" if which == "user_features" else "recsys_short_results_total"
    assert counter(pb, family) == (2 if which == "user_features" else 1)


def test_the_flushing_thread_sends_counts_once_traffic_stops() -> None:
    pb = FakePbUtils()
    metrics = LiveMetrics(pb, "model", "1", flush_interval_s=0.05)
    observe_both(metrics)
    # No further batch and no explicit flush: only the thread can deliver these.
    deadline = time.monotonic() + 30
    while counter(pb, "recsys_requests_total") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counter(pb, "recsys_requests_total") == 2
    metrics.close()
    assert counter(pb, "recsys_requests_total") == 2, "nothing sent twice"


def test_counting_while_the_thread_flushes_loses_and_duplicates_nothing() -> None:
    expected, pb = FakePbUtils(), FakePbUtils()
    single = LiveMetrics(expected, "model", "1", flush_interval_s=NEVER)
    observe_both(single)
    single.flush()
    metrics = LiveMetrics(pb, "model", "1", flush_interval_s=0.001)
    batches = 300
    stop = threading.Event()

    def flush_until_stopped() -> None:
        # A second flusher beside the periodic one, as close() can be.
        while not stop.is_set():
            metrics.flush()

    flushes = CheckedThread(flush_until_stopped, name="flusher")
    flushes.start()
    for _ in range(batches):
        observe_both(metrics)
    stop.set()
    flushes.join(timeout=30)
    metrics.close()
    assert pb.errors == []
    assert pb.counts == {k: batches * v for k, v in expected.counts.items()}
    assert sum(pb.calls.values()) > len(expected.calls), "flushed while counting"


def test_a_failing_flush_is_logged_not_raised_and_keeps_the_counts() -> None:
    pb = FakePbUtils(broken=True)
    metrics = LiveMetrics(pb, "reorder", "3", flush_interval_s=NEVER)
    observe_results(metrics, None, [np.array([0.4])], [np.array([1], dtype=np.int8)], [5])
    assert pb.errors == [], "counting itself does not touch the metrics API"
    metrics.flush()
    assert pb.counts == {}
    assert len(pb.errors) == 1
    assert "model 'reorder' version 3: flushing the live counters" in pb.errors[0]
    assert "kept for the next flush" in pb.errors[0]
    assert "RuntimeError: metrics API unavailable" in pb.errors[0]  # the traceback is logged
    pb.broken = False
    metrics.close()
    by_family = {dict(k)["family"]: v for k, v in pb.counts.items()}
    assert by_family == {"recsys_short_results_total": 1.0,
                         "recsys_served_items_total": 1.0}  # fmt: skip


def test_a_flush_failing_half_way_sends_no_count_twice() -> None:
    expected, pb = FakePbUtils(), FakePbUtils()
    single = LiveMetrics(expected, "model", "1", flush_interval_s=NEVER)
    observe_both(single)
    single.flush()
    metrics = LiveMetrics(pb, "model", "1", flush_interval_s=NEVER)
    observe_both(metrics)
    pb.fail_at = len(expected.counts) // 2
    metrics.flush()
    assert len(pb.errors) == 1
    assert 0 < len(pb.counts) < len(expected.counts)
    observe_both(metrics)
    metrics.close()
    assert pb.counts == {k: 2 * v for k, v in expected.counts.items()}


def test_a_failing_count_is_logged_and_does_not_raise() -> None:
    pb = FakePbUtils()
    metrics = LiveMetrics(pb, "user_features", "3", flush_interval_s=NEVER)
    raw, categorical = user_batch()
    del raw["age"]  # a monitored column missing: the plan cannot count this batch
    observe_user_features(metrics, profile(), raw, categorical, SPEC, SCHEMA)
    metrics.close()
    assert pb.counts == {}
    assert len(pb.errors) == 1
    assert "model 'user_features' version 3: counting user features" in pb.errors[0]
    assert "the request is answered without these counts" in pb.errors[0]
    assert "KeyError: 'age'" in pb.errors[0]


def test_a_failing_logger_does_not_raise_either() -> None:
    pb = FakePbUtils(broken=True)

    def log_error(message: str) -> None:
        raise OSError("log pipe closed")

    pb.Logger.log_error = staticmethod(log_error)  # type: ignore[method-assign]
    metrics = LiveMetrics(pb, "model", "1", flush_interval_s=NEVER)
    observe_both(metrics)
    metrics.close()


# Parity: the vectorised counts equal a plain per-value computation of the same counters.


def _null(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _reference_bin(feature: FeatureProfile, value: object) -> str:
    if _null(value):
        return MISSING
    if feature.kind == "numeric":
        return feature.bins[bisect.bisect_right(feature.edges, float(value))]  # type: ignore[arg-type]
    return str(value) if str(value) in feature.values else OTHER


def reference_user_counts(
    profile: ReferenceProfile | None, raw: dict[str, np.ndarray], categorical: np.ndarray
) -> dict[Key, float]:
    counts: Counter[Key] = Counter({("recsys_requests_total", ()): len(categorical)})
    monitored = SCHEMA.monitored()
    tracked = {"user_id"} | {n for n, f in monitored.items() if f.kind == "categorical"}
    for name, start in zip(SPEC.categorical, SPEC.offsets(), strict=True):
        if name in tracked:
            for index in categorical[:, start]:
                counts[("recsys_oov_total", (("feature", name),))] += int(index == OOV_INDEX)
    for name in monitored:
        for value in raw[name]:
            counts[("recsys_missing_total", (("feature", name),))] += int(_null(value))
    for feature in profile.features if profile else ():
        for value in raw[feature.name]:
            label = _reference_bin(feature, value)
            counts[("recsys_feature_bin_total", (("bin", label), ("feature", feature.name)))] += 1
    return {k: float(v) for k, v in counts.items() if v}


def parity_profile(rng: np.random.Generator) -> ReferenceProfile:
    countries = np.array([*"abcde", 7, None], dtype=object)[rng.integers(0, 7, 400)]
    return ReferenceProfile(
        (
            numeric_profile("age", rng.integers(10, 90, 400).astype(np.float64)),
            categorical_profile("country", countries),
            categorical_profile("zipcode", rng.integers(100, 130, 400)),
        ),
        score_profile(rng.uniform(0, 1, 400)),
    )


def random_batch(rng: np.random.Generator, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Nulls (None and NaN), out-of-profile values, numbers among strings, and whole
    columns of each dtype the raw columns and overrides can carry."""
    # Whole numbers: values equal to the profile's quantile edges are frequent.
    age = rng.integers(0, 120, rows).astype(np.float32)
    age[rng.random(rows) < 0.2] = np.nan
    pool = np.array(["a", "b", "e", "zz", "", 7, "7", None, np.nan, 3.5], dtype=object)
    country = pool[rng.integers(0, len(pool), rows)]
    device = np.array(["ios", "web", None, np.nan], dtype=object)[rng.integers(0, 4, rows)]
    zipcode: np.ndarray = rng.integers(95, 135, rows)  # int64, as a dtype: int64 override
    if rng.random() < 0.5:
        zipcode = np.where(rng.random(rows) < 0.2, None, zipcode.astype(object))
    categorical = rng.integers(0, 6, size=(rows, len(SPEC.categorical)))
    return {"age": age, "country": country, "device": device, "zipcode": zipcode}, categorical


def plan_counts(plan: UserCountPlan, counts: np.ndarray) -> dict[Key, float]:
    return {plan.keys[i]: float(counts[i]) for i in np.flatnonzero(counts)}


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_user_counts_equal_a_per_value_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference_profile = None if seed % 5 == 4 else parity_profile(rng)
    plan = UserCountPlan.compile(reference_profile, SPEC, SCHEMA)
    for rows in (1, 2, int(rng.integers(3, 65))):
        raw, categorical = random_batch(rng, rows)
        expected = reference_user_counts(reference_profile, raw, categorical)
        assert plan_counts(plan, plan.count(raw, categorical)) == expected
        if reference_profile is not None:
            for feature in reference_profile.features:
                per_value = Counter(_reference_bin(feature, v) for v in raw[feature.name])
                assert feature.counts(raw[feature.name]) == {b: per_value[b] for b in feature.bins}


def test_counters_on_the_metrics_api_equal_the_reference() -> None:
    rng = np.random.default_rng(99)
    reference_profile = parity_profile(rng)
    pb = FakePbUtils()
    metrics = LiveMetrics(pb, "user_features", "4", sample_rate=1.0, flush_interval_s=NEVER)
    expected: Counter[Key] = Counter()
    for _ in range(5):
        raw, categorical = random_batch(rng, int(rng.integers(1, 65)))
        observe_user_features(metrics, reference_profile, raw, categorical, SPEC, SCHEMA)
        expected.update(reference_user_counts(reference_profile, raw, categorical))
    metrics.close()
    assert pb.errors == []
    got = {
        (dict(k)["family"], tuple((n, v) for n, v in k if n not in ("family", "model", "version"))):
        v for k, v in pb.counts.items()
    }  # fmt: skip
    assert got == dict(expected)


def test_vectorised_result_counts_equal_a_per_value_reference() -> None:
    rng = np.random.default_rng(5)
    reference_profile = parity_profile(rng)
    plan = ResultCountPlan.compile(reference_profile)
    scores = [rng.uniform(0, 1, int(rng.integers(0, 11))) for _ in range(40)]
    scores[3][:1] = np.nan
    deciles = [rng.integers(0, 10, len(s)).astype(np.int8) for s in scores]
    top_k = [int(k) for k in rng.integers(1, 11, len(scores))]
    expected: Counter[Key] = Counter()
    expected[("recsys_short_results_total", ())] = sum(
        len(s) < k for s, k in zip(scores, top_k, strict=True))  # fmt: skip
    for row in deciles:
        for d in row:
            expected[("recsys_served_items_total", (("popularity_decile", str(d)),))] += 1
    for row in scores:
        for value in row:
            label = _reference_bin(reference_profile.scores, value)
            expected[("recsys_score_bin_total", (("bin", label),))] += 1
    counts = plan.count(scores, deciles, top_k)
    assert {plan.keys[i]: counts[i] for i in np.flatnonzero(counts)} == {
        k: float(v) for k, v in expected.items() if v}  # fmt: skip


def test_sampled_counting_keeps_request_rows_exact_and_scales_the_rest() -> None:
    pb = FakePbUtils()
    metrics = LiveMetrics(pb, "user_features", "1", sample_rate=0.25, flush_interval_s=NEVER)
    raw = {"age": np.array([30.0]), "country": np.array(["a"], dtype=object),
           "device": np.array([None], dtype=object),
           "zipcode": np.array(["1"], dtype=object)}  # fmt: skip
    categorical = np.array([[OOV_INDEX, 5, 5, 5]])
    for _ in range(2000):
        observe_user_features(metrics, profile(), raw, categorical, SPEC, SCHEMA)
    metrics.close()
    by_family = {dict(k)["family"]: v for k, v in pb.counts.items()
                 if dict(k).get("feature") in (None, "device")}  # fmt: skip
    assert by_family["recsys_requests_total"] == 2000
    missing = by_family["recsys_missing_total"]
    assert missing % 4 == 0  # each counted batch stands for 1/rate batches
    assert 2000 * 0.75 < missing < 2000 * 1.25  # binomial(2000, 0.25) * 4: sd ~ 77


def test_sample_rate_and_flush_interval_come_from_the_configuration() -> None:
    configured = LiveMetrics(FakePbUtils(), "m", "1")
    assert (configured.sample_rate, configured.flush_interval_s) == (1.0, 1.0)
    with pytest.raises(ValueError, match="sample_rate"):
        LiveMetrics(FakePbUtils(), "m", "1", sample_rate=0.0)
    with pytest.raises(ValueError, match="flush_interval_s"):
        LiveMetrics(FakePbUtils(), "m", "1", flush_interval_s=0.0)


def test_the_flush_interval_is_validated_in_the_settings(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("monitoring:\n  flush_interval_s: 0\n")
    with pytest.raises(SettingsError, match="flush_interval_s"):
        load_settings(config)
    config.write_text("monitoring:\n  flush_interval_s: 0.25\n")
    assert load_settings(config).monitoring.flush_interval_s == 0.25
