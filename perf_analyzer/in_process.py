"""The same stages called directly in Python: the in-process ceiling and per-stage cost.

No server, no serialisation: what the operators themselves cost, to set beside what each
Triton model reports as its compute and beside the platform floor (perf_analyzer/floor.py).
Per-stage times come from running `InProcessRecommender.recommend` (the chain the parity
tests hold equal to the server) with every stage wrapped in a clock, plus the live
counters the served models also run (monitoring.batch_counts), so nothing is re-implemented.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from monitoring.batch_counts import ResultCountPlan, UserCountPlan
from monitoring.live_metrics import load_profile
from serving.stages.chain import InProcessRecommender

MONITORING = "monitoring counters"


def stage_names(pipeline: InProcessRecommender) -> tuple[str, ...]:
    """The chain's stages, named like the Triton models (its fields not set by __init__)."""
    return tuple(f.name for f in dataclasses.fields(pipeline) if not f.init)


class _Clock:
    """Wraps a stage: calls to it and to its methods add their time to `spent[name]`, and
    the last return value of each is kept (the monitoring counters need the raw columns
    and the categorical matrix the chain produced)."""

    def __init__(self, stage: Any, name: str, spent: dict[str, int]) -> None:
        self._stage, self._name, self._spent = stage, name, spent
        self.returned: dict[str, Any] = {}

    def _timed(self, key: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            result = function(*args, **kwargs)
            self._spent[self._name] += time.perf_counter_ns() - started
            self.returned[key] = result
            return result

        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("__call__", self._stage)(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._stage, attribute)
        return self._timed(attribute, value) if inspect.ismethod(value) else value


def _overrides(entry: dict[str, Any]) -> dict[str, np.ndarray]:
    contract = ("user_id", "top_k", "exclude_item_ids")
    return {name: np.asarray(value) for name, value in entry.items() if name not in contract}


def stage_latencies(
    pipeline: InProcessRecommender, entries: Sequence[dict[str, Any]], requests: int,
    warmup: int = 20,
) -> pd.DataFrame:  # fmt: skip
    """Median µs per request of each stage at batch 1 (the perf load's entries, in turn),
    with the live counters counted into the stage that runs them in the server and also
    shown on their own; `total` is the median wall time of a whole request."""
    repository, version = pipeline.repository, pipeline.version
    user_profile = load_profile(repository / "user_features" / str(version))
    result_profile = load_profile(repository / "reorder" / str(version))
    users = pipeline.user_features
    user_plan = UserCountPlan.compile(user_profile, users.spec, users.schema)
    result_plan = ResultCountPlan.compile(result_profile)
    timed = copy.copy(pipeline)
    spent: dict[str, int] = defaultdict(int)
    stages = stage_names(pipeline)
    clocks = {name: _Clock(getattr(pipeline, name), name, spent) for name in stages}
    for name, clock in clocks.items():
        setattr(timed, name, clock)
    samples: dict[str, list[int]] = defaultdict(list)
    for index in range(warmup + requests):
        entry = entries[index % len(entries)]
        spent.clear()
        started = time.perf_counter_ns()
        top_k = int(entry["top_k"][0])
        exclude = [np.asarray(entry["exclude_item_ids"]["content"], dtype=np.int64)]
        answer = timed.recommend(np.asarray(entry["user_id"]), top_k, exclude, _overrides(entry))
        counting = time.perf_counter_ns()
        returned = clocks["user_features"].returned
        user_plan.count(returned["raw_columns"], returned["transform"][0])
        user_counted = time.perf_counter_ns()
        deciles = [pipeline.reorder.deciles_of(r.item_ids) for r in answer]
        result_plan.count([r.scores for r in answer], deciles, [top_k] * len(answer))
        finished = time.perf_counter_ns()
        spent["user_features"] += user_counted - counting
        spent["reorder"] += finished - user_counted
        spent[MONITORING] = finished - counting
        spent["total"] = finished - started
        if index >= warmup:
            for name, value in spent.items():
                samples[name].append(value)
    return pd.DataFrame(
        [{"stage": name, "in_process_us": float(np.median(samples[name])) / 1000}
         for name in (*stages, MONITORING, "total")]
    )  # fmt: skip


def in_process_ceiling(
    pipeline: InProcessRecommender, user_ids: np.ndarray, batch_sizes: tuple[int, ...],
    seconds: float, top_k: int,
) -> pd.DataFrame:  # fmt: skip
    """Requests/s of the chain called with batches of each size, for `seconds` each."""
    rows = []
    for batch in batch_sizes:
        served, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            users = np.resize(np.roll(user_ids, served), batch)
            pipeline.recommend(users, top_k)
            served += batch
        elapsed = time.perf_counter() - started
        rows.append({"batch_size": str(batch), "requests_per_s": served / elapsed})
    return pd.DataFrame(rows)
