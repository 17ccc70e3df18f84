"""report.md from one run's measurements: ratios first, each beside its target."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from perf_analyzer.in_process import MONITORING
from perf_analyzer.report_peer import peer_comparison, peer_headline, peer_section
from perf_analyzer.report_tables import (
    P99_BOUND_MS,
    at_concurrency,
    best_under_bound,
    markdown,
)
from perf_analyzer.sweep import Attempt
from recsys.settings import Settings

FLOOR_TARGET = 1.5  # c=1 p50 <= 1.5 x (floor p50 + in-process batch-1 latency)
STAGE_TARGET = 2.0  # a stage's served compute <= 2 x the same operator in-process


@dataclass(frozen=True)
class Measured:
    run_name: str
    settings: Settings
    users: int
    items: int
    top_k: int
    grpc: pd.DataFrame
    http: pd.DataFrame
    breakdown: pd.DataFrame  # composing models per gRPC concurrency
    poisson: pd.DataFrame
    stages: pd.DataFrame
    wrk: pd.DataFrame
    floor: pd.DataFrame
    floor_breakdown: pd.DataFrame
    in_process: pd.DataFrame  # stage, in_process_us (batch 1)
    ceiling: pd.DataFrame
    retrieval_scale: pd.DataFrame
    ranking_scale: pd.DataFrame
    peer: pd.DataFrame  # merlin-systems' export, gRPC (empty when not measured)
    peer_note: str  # why the peer was not measured ("" when it was)
    attempts: tuple[Attempt, ...]

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            "ensemble_summary": pd.concat([self.grpc, self.http]),
            "wrk": self.wrk,
            "composing_breakdown": self.breakdown,
            "poisson": self.poisson,
            "stages": self.stages,
            "floor": self.floor,
            "floor_breakdown": self.floor_breakdown,
            "in_process_stages": self.in_process,
            "in_process": self.ceiling,
            "scaling_retrieval": self.retrieval_scale,
            "scaling_ranking": self.ranking_scale,
            "stage_compute": stage_compute(self),
            "merlin_peer": peer_comparison(self.grpc, self.peer),
        }


def _compute_at_1(breakdown: pd.DataFrame, column: str) -> pd.Series:
    if breakdown.empty:
        return pd.Series(dtype=float)
    return breakdown[breakdown["concurrency"] == 1].set_index("model")[column].astype(float)


def stage_compute(m: Measured) -> pd.DataFrame:
    """Each stage at concurrency 1: served compute and queue (perf_analyzer's composing-model
    split), the no-op floor's compute, and the same operator in-process."""
    in_process = m.in_process.set_index("stage")["in_process_us"]
    served = _compute_at_1(m.breakdown, "compute_us")
    queue = _compute_at_1(m.breakdown, "queue_us")
    floor = _compute_at_1(m.floor_breakdown, "compute_us")
    rows = []
    for stage in in_process.index:
        if stage in (MONITORING, "total"):
            continue
        rows.append({
            "stage": stage,
            "served_compute_us": served.get(stage, float("nan")),
            "served_queue_us": queue.get(stage, float("nan")),
            "floor_compute_us": floor.get(stage, float("nan")),
            "in_process_us": float(in_process[stage]),
            "served_over_in_process": _times(served.get(stage, float("nan"))
                                             / float(in_process[stage])),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _times(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.1f}×"


def _ratio(value: float, target: float, fmt: str = ".2f") -> str:
    if pd.isna(value):
        return "n/a (not measured)"
    return f"{value:{fmt}}×" + (" ✓" if value <= target else " ✗")


def attempts_table(attempts: tuple[Attempt, ...]) -> str:
    odd = [a for a in attempts if a.status != "stable" or a.note]
    if not odd:
        return "Every level settled in perf_analyzer's first measurement mode."
    frame = pd.DataFrame([{"level": a.level, "status": a.status, "measured with": a.how,
                           "earlier runs": a.note or "-"} for a in odd])  # fmt: skip
    return ("Levels not measured at the first try. `stable` after retries: a longer or "
            "count-based window settled, or a run stopped by a failed request was repeated; "
            "`unstable`: the last count-based windows, accepted with any spread; `failed`: "
            "requests kept failing, no figures.\n\n" + markdown(frame))  # fmt: skip


def render(m: Measured) -> str:
    s = m.settings.serving
    bound = f"p99 ≤ {P99_BOUND_MS:g} ms"
    headline = best_under_bound(m.grpc)
    p50_c1 = at_concurrency(m.grpc, "p50_ms")
    p99_c1 = at_concurrency(m.grpc, "p99_ms")
    floor_p50 = at_concurrency(m.floor, "p50_ms")
    in_process = m.in_process.set_index("stage")["in_process_us"]
    in_process_ms = float(in_process["total"]) / 1000
    monitoring_us = float(in_process[MONITORING])
    expected = floor_p50 + in_process_ms
    floor_label = (f"c=1 p50 ÷ (floor p50 {floor_p50:.2f} ms + in-process batch-1 "
                   f"{in_process_ms:.2f} ms)")  # fmt: skip
    floor_ratio = _ratio(p50_c1 / expected, FLOOR_TARGET)
    ceiling_best = float(m.ceiling["requests_per_s"].max())
    efficiency = float(m.grpc["throughput"].max()) / ceiling_best
    triton_wrk = m.wrk[m.wrk["series"].str.startswith("Triton")]
    fastapi_wrk = m.wrk[m.wrk["series"].str.startswith("FastAPI")]
    triton_best, fastapi_best = best_under_bound(triton_wrk), best_under_bound(fastapi_wrk)
    paired = triton_wrk.merge(fastapi_wrk, on="concurrency", suffixes=("_triton", "_fastapi"))
    equal = ", ".join(f"c={r.concurrency}: {r.throughput_triton / r.throughput_fastapi:.1f}×"
                      for r in paired.itertuples() if r.throughput_fastapi > 0)  # fmt: skip
    if fastapi_best and triton_best:
        versus = f"{triton_best / fastapi_best:.2f}× ({triton_best:.0f} vs {fastapi_best:.0f}/s)"
    else:
        versus = (f"n/a: Triton {triton_best:.0f}/s, FastAPI {fastapi_best:.0f}/s within the "
                  "bound (0: no level met it)")  # fmt: skip
    top = m.breakdown[m.breakdown["concurrency"] == m.breakdown["concurrency"].max()] if len(
        m.breakdown) else m.breakdown  # fmt: skip
    dominant = top.sort_values("avg_us", ascending=False).iloc[0]["model"] if len(top) else "n/a"
    cross = m.http.merge(triton_wrk, on="concurrency", suffixes=("_pa", "_wrk"))
    cross_check = ", ".join(f"c={r.concurrency}: {r.throughput_pa:.0f} vs {r.throughput_wrk:.0f}"
                            for r in cross.itertuples()) or "no common level"  # fmt: skip
    errors = int(m.wrk["errors"].sum())
    marked = sum(a.status != "stable" for a in m.attempts)
    return f"""# Serving-efficiency report

Run {m.run_name}: {m.users} held-out users, top_k {m.top_k}, {s.num_candidates} candidates
ranked per request, catalog of {m.items} items, dynamic batching delay
{s.max_queue_delay_microseconds} µs, {s.instance_count} instance(s) per stage, torch threads
{s.torch_threads}, live counters sampling {m.settings.monitoring.sample_rate:g} of batches.
All figures measured in this run on this machine; compare ratios, not absolute times
(shared 2-core machine; the load tools run on it too).

## Headline

| measure | value | target |
|---|---|---|
| ensemble requests/s at {bound} (gRPC, perf_analyzer) | {headline:.1f} | |
| {floor_label} | {floor_ratio} (p50 {p50_c1:.2f} ms) | ≤ {FLOOR_TARGET:g}× |
| p99 at concurrency 1 (gRPC) | {p99_c1:.1f} ms | < 20 ms |
| serving efficiency: peak ÷ in-process ceiling ({ceiling_best:.0f}/s) | {efficiency:.2f} | ≥ 0.5 |
| Triton ÷ FastAPI, requests/s at {bound} (both HTTP, same wrk) | {versus} | ≥ 3× |
| Triton ÷ FastAPI at equal concurrency (wrk) | {equal or "n/a"} | |
{peer_headline(m.grpc, m.peer)}
| wrk errors (non-2xx, socket, timeout) | {errors} | 0 |
| perf_analyzer levels unstable or failed (see below) | {marked} of {len(m.attempts)} | 0 |
| stage with the largest share of ensemble latency (highest concurrency) | {dominant} | |

![throughput vs p99](throughput_vs_p99.png)

## Against the platform's floor

The floor is this repository's ensemble with every stage replaced by a no-op Python model
that reads its inputs and returns zeros of the real output shapes
(`perf_analyzer/floor.py`): what Triton, the ensemble scheduler and the Python backend's
IPC cost per request before any stage computes.

{markdown(m.floor)}

Each stage at concurrency 1 (µs per request): its compute inside Triton (perf_analyzer's
composing-model split), its queue time, the no-op floor's compute for the same stage, and
the same operator called in-process at batch 1 (live counters included where the served
model runs them; target: served ≤ {STAGE_TARGET:g}× in-process):

{markdown(stage_compute(m), ".0f")}

The live counters themselves cost {monitoring_us:.0f} µs per request in-process (binning the
monitored features and the served scores, vectorised; `monitoring/batch_counts.py`).

## Measurement quality

{attempts_table(m.attempts)}

## Triton ensemble (perf_analyzer)

{markdown(pd.concat([m.grpc, m.http]))}

Per composing model and gRPC concurrency (µs per request: queue, compute, overhead):

{markdown(m.breakdown, ".0f") if len(m.breakdown) else "(not reported)"}

Poisson arrivals at 25/50/75% of the peak closed-loop throughput:

{markdown(m.poisson)}

## Each stage alone through Triton

{markdown(m.stages)}

## The same compiled load tool (wrk) against Triton's HTTP endpoint and the FastAPI baseline

{markdown(m.wrk)}

Cross-check, Triton over HTTP with perf_analyzer vs wrk at the same concurrency
(requests/s): {cross_check}.

## merlin-systems' export of the same pipeline (perf_analyzer, gRPC)

{peer_section(m.grpc, m.peer, m.peer_note)}

## In-process (same stages, no server)

Batch 1, median µs per request:

{markdown(m.in_process)}

Batched ceiling:

{markdown(m.ceiling)}

## Scaling

Retrieval, one query at a time:

{markdown(m.retrieval_scale, ".3f")}

DLRM memory and scoring time for {s.num_candidates} candidates vs id-table size:

{markdown(m.ranking_scale, ".3f")}
"""
