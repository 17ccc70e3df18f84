"""Parsing perf_analyzer's output into tables, and rendering them (markdown, plot)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

P99_BOUND_MS = 60.0  # MLPerf DLRM server-scenario latency bound

COMPOSING = re.compile(r"^\s*(\w+), version: (\d+)\s*$")
LATENCY = re.compile(
    r"Avg request latency: (\d+) usec \(overhead (\d+) usec \+ queue (\d+) usec \+ "
    r"compute input (\d+) usec \+ compute infer (\d+) usec \+ compute output (\d+) usec\)"
)


def composing_breakdown(stdout: str) -> list[dict[str, Any]]:
    """Per-composing-model latency split from perf_analyzer's ensemble output."""
    rows, current = [], None
    for line in stdout.splitlines():
        if match := COMPOSING.match(line):
            current = match.group(1)
        elif current and (match := LATENCY.search(line)):
            total, overhead, queue, c_in, c_infer, c_out = map(int, match.groups())
            compute = c_in + c_infer + c_out
            rows.append({"model": current, "avg_us": total, "queue_us": queue,
                         "compute_us": compute, "overhead_us": overhead})  # fmt: skip
            current = None
    return rows


def _number(frame: pd.DataFrame, column: str, scale: float = 1.0) -> pd.Series:
    """A numeric column; rows of failed levels (no such value) become NaN."""
    if column not in frame:
        return pd.Series(float("nan"), index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce") / scale


def perf_table(rows: list[dict[str, str]], label: str) -> pd.DataFrame:
    """perf_analyzer CSV rows as the report's columns; `measurement` says whether a row is
    stable, unstable (accepted after retries) or failed (no figures)."""
    frame = pd.DataFrame(rows)
    return pd.DataFrame(
        {
            "series": label,
            "concurrency": _number(frame, "Concurrency").astype("Int64"),
            "throughput": _number(frame, "Inferences/Second"),
            "p50_ms": _number(frame, "p50 latency", 1000),
            "p99_ms": _number(frame, "p99 latency", 1000),
            "queue_ms": _number(frame, "Server Queue", 1000),
            "compute_ms": _number(frame, "Server Compute Infer", 1000),
            "measurement": frame.get("Measurement", pd.Series("stable", index=frame.index)),
        }
    )


def at_concurrency(table: pd.DataFrame, column: str, level: int = 1) -> float:
    values = table.loc[table["concurrency"] == level, column]
    return float(values.iloc[0]) if len(values) else float("nan")


def best_under_bound(table: pd.DataFrame, bound_ms: float = P99_BOUND_MS) -> float:
    within = table[table["p99_ms"] <= bound_ms]
    return float(within["throughput"].max()) if len(within) else 0.0


def markdown(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [f"{v:{floatfmt}}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(tables: list[pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for table in tables:
        for series, part in table.dropna(subset=["throughput"]).groupby("series"):
            part = part.sort_values("concurrency")
            ax.plot(part["throughput"], part["p99_ms"], marker="o", label=series)
    ax.axhline(P99_BOUND_MS, color="grey", linestyle="--", label=f"p99 bound {P99_BOUND_MS:g} ms")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("recommender: throughput vs p99 latency (points = concurrency levels)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rate_table(rows: list[dict[str, str]]) -> pd.DataFrame:
    """perf_analyzer request-rate rows: offered rate, achieved rate, p99."""
    frame = pd.DataFrame(rows)
    return pd.DataFrame(
        {
            "rate": _number(frame, "Request Rate"),
            "achieved": _number(frame, "Inferences/Second"),
            "p99_ms": _number(frame, "p99 latency", 1000),
            "measurement": frame.get("Measurement", pd.Series("stable", index=frame.index)),
        }
    )
