"""The live model-quality counters never fail a request: an exception inside them is logged
through the model's pb_utils Logger and the observe_* call returns. No server needed: a fake
pb_utils stands in for triton_python_backend_utils."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monitoring.live_metrics import LiveMetrics, observe_results, observe_user_features
from monitoring.profile import (
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
    score_profile,
)
from recsys.contract import FeatureSpec
from recsys.schema import load_schema

SCHEMA = load_schema("synthetic")
SPEC = FeatureSpec(("user_id", "country", "device", "zipcode"), (100, 13, 4, 2048), ("age",))


class FakePbUtils:
    """The parts of triton_python_backend_utils LiveMetrics uses; `broken` makes every
    Metric.increment raise, as a metrics API failing inside the stub would."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.counts: dict[tuple[tuple[str, str], ...], float] = {}
        self.errors: list[str] = []
        fake = self

        class Metric:
            def __init__(self, labels: dict[str, str]) -> None:
                self.key = tuple(sorted(labels.items()))

            def increment(self, amount: float) -> None:
                if fake.broken:
                    raise RuntimeError("metrics API unavailable")
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


def observe_both(pb: Any) -> None:
    metrics = LiveMetrics(pb, "model", "1")
    raw, categorical = user_batch()
    observe_user_features(metrics, profile(), raw, categorical, SPEC, SCHEMA)
    observe_results(
        metrics, profile(), [np.array([0.9, 0.2]), np.array([0.5])],
        [np.array([0, 3], dtype=np.int8), np.array([9], dtype=np.int8)], [2, 3],
    )  # fmt: skip


def test_working_counters_count_and_log_nothing() -> None:
    pb = FakePbUtils()
    observe_both(pb)
    assert pb.errors == []
    requests = dict(family="recsys_requests_total", model="model", version="1")
    assert pb.counts[tuple(sorted(requests.items()))] == 2
    short = dict(family="recsys_short_results_total", model="model", version="1")
    assert pb.counts[tuple(sorted(short.items()))] == 1


@pytest.mark.parametrize("which", ["user_features", "results"])
def test_a_failing_counter_is_logged_and_does_not_raise(which: str) -> None:
    pb = FakePbUtils(broken=True)
    metrics = LiveMetrics(pb, "reorder", "3")
    if which == "user_features":
        raw, categorical = user_batch()
        observe_user_features(metrics, profile(), raw, categorical, SPEC, SCHEMA)
    else:
        observe_results(metrics, None, [np.array([0.4])], [np.array([1], dtype=np.int8)], [5])
    assert pb.counts == {}
    assert len(pb.errors) == 1
    assert "model 'reorder' version 3" in pb.errors[0]
    assert "RuntimeError: metrics API unavailable" in pb.errors[0]  # the traceback is logged


def test_a_failing_logger_does_not_raise_either() -> None:
    pb = FakePbUtils(broken=True)

    def log_error(message: str) -> None:
        raise OSError("log pipe closed")

    pb.Logger.log_error = staticmethod(log_error)  # type: ignore[method-assign]
    observe_both(pb)
