"""A small closed-loop HTTP load generator, for services perf_analyzer cannot drive.

The FastAPI baseline speaks plain JSON, not Triton's protocol, so both it and Triton's
HTTP endpoint are driven by this one tool at the same concurrencies; its Triton numbers
are cross-checked against perf_analyzer's in the report.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np


@dataclass(frozen=True)
class LoadResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def percentile(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")
        )


CONTRACT_KEYS = ("user_id", "top_k", "exclude_item_ids")


def _datatype(value: object) -> str:
    if isinstance(value, str):
        return "BYTES"
    return "FP32" if isinstance(value, float) else "INT64"


def triton_infer_body(entry: dict[str, Any]) -> dict[str, Any]:
    """KServe v2 JSON body for one perf_analyzer input-data entry (batch of one)."""
    inputs = [
        {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": entry["user_id"]},
        {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": entry["top_k"]},
    ]
    exclude = entry.get("exclude_item_ids")
    if exclude:
        content = exclude["content"]
        inputs.append({"name": "exclude_item_ids", "shape": [1, len(content)],
                       "datatype": "INT64", "data": content})  # fmt: skip
    for name, value in entry.items():
        if name not in CONTRACT_KEYS:
            inputs.append({"name": name, "shape": [1, 1], "datatype": _datatype(value[0]),
                           "data": value})  # fmt: skip
    return {"inputs": inputs}


def baseline_body(entry: dict[str, Any]) -> dict[str, Any]:
    """The FastAPI baseline's JSON body for the same entry."""
    body: dict[str, Any] = {"user_id": entry["user_id"][0], "top_k": entry["top_k"][0]}
    if entry.get("exclude_item_ids"):
        body["exclude_item_ids"] = entry["exclude_item_ids"]["content"]
    features = {k: v[0] for k, v in entry.items() if k not in CONTRACT_KEYS}
    if features:
        body["features"] = features
    return body


async def _run(
    url: str, bodies: Sequence[dict[str, Any]], concurrency: int, duration_s: float,
    warmup_s: float,
) -> tuple[int, int, float, list[float]]:  # fmt: skip
    cycle = itertools.cycle(bodies)
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0}
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop_at = measure_from + duration_s

        async def worker() -> None:
            while (now := time.perf_counter()) < stop_at:
                body = next(cycle)
                try:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        ok = response.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                done = time.perf_counter()
                if now >= measure_from:
                    counts["requests"] += 1
                    counts["errors"] += not ok
                    if ok:
                        latencies.append((done - now) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts["requests"], counts["errors"], duration_s, latencies


def drive(
    target: str,
    url: str,
    entries: Sequence[dict[str, Any]],
    make_body: Callable[[dict[str, Any]], dict[str, Any]],
    concurrency: int,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
) -> LoadResult:
    bodies = [make_body(e) for e in entries]
    requests, errors, seconds, latencies = asyncio.run(
        _run(url, bodies, concurrency, duration_s, warmup_s)
    )
    return LoadResult(target, concurrency, requests, errors, seconds, np.array(latencies))
