"""The serving-efficiency report: perf_analyzer sweeps plus baselines, measured in one run.

    python -m perf_analyzer.report [--quick]      (make perf-report / make perf-report-quick)

On the same machine and data, one after another (never two servers at once):
  1. Triton ensemble: perf_analyzer concurrency sweeps over gRPC and HTTP (per-composing-
     model queue/compute breakdown) and Poisson request-rate runs;
  2. each stage alone through Triton (retrieval, ranking);
  3. Triton HTTP and the FastAPI baseline driven by the same load generator;
  4. the in-process ceiling: the same stages called directly, batched, no server;
  5. catalog and embedding-table scaling.
Writes CSVs, throughput-vs-p99 plots and report.md under results/perf/<run>/.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perf_analyzer import scaling
from perf_analyzer.loadgen import LoadResult, baseline_body, drive, triton_infer_body
from perf_analyzer.sweep import (
    build_input_data,
    held_out_users,
    run_request_rates,
    run_sweep,
)
from recsys.settings import PROJECT_ROOT, Settings, load_settings
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender

P99_BOUND_MS = 60.0  # MLPerf DLRM server-scenario latency bound


@dataclass(frozen=True)
class Plan:
    grpc_concurrency: tuple[int, ...]
    http_concurrency: tuple[int, ...]
    loadgen_concurrency: tuple[int, ...]
    stage_concurrency: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    catalog_sizes: tuple[int, ...]
    id_cardinalities: tuple[int, ...]
    interval_ms: int
    loadgen_seconds: float
    stability: int


QUICK = Plan((1, 4, 16), (1, 4), (1, 4, 16), (1, 4), (1, 8, 64), (10_000, 100_000),
             (10_000, 1_000_000), 2000, 4.0, 60)  # fmt: skip
FULL = Plan((1, 2, 4, 8, 16, 32, 64), (1, 4, 16, 64), (1, 2, 4, 8, 16, 32, 64), (1, 4, 16),
            (1, 8, 32, 64), (10_000, 100_000, 1_000_000), (10_000, 1_000_000, 10_000_000),
            5000, 10.0, 25)  # fmt: skip

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


def perf_table(rows: list[dict[str, str]], label: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    out = pd.DataFrame(
        {
            "series": label,
            "concurrency": frame["Concurrency"].astype(int),
            "throughput": frame["Inferences/Second"].astype(float),
            "p50_ms": frame["p50 latency"].astype(float) / 1000,
            "p99_ms": frame["p99 latency"].astype(float) / 1000,
            "queue_ms": frame["Server Queue"].astype(float) / 1000,
            "compute_ms": frame["Server Compute Infer"].astype(float) / 1000,
        }
    )
    return out


def loadgen_table(results: list[LoadResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "series": r.target,
                "concurrency": r.concurrency,
                "throughput": r.throughput,
                "p50_ms": r.percentile(50),
                "p99_ms": r.percentile(99),
                "errors": r.errors,
                "requests": r.requests,
            }
            for r in results
        ]  # fmt: skip
    )


def best_under_bound(table: pd.DataFrame, bound_ms: float = P99_BOUND_MS) -> float:
    within = table[table["p99_ms"] <= bound_ms]
    return float(within["throughput"].max()) if len(within) else 0.0


def stage_input_data(pipeline: InProcessRecommender, user_ids: np.ndarray) -> dict[str, Path]:
    """Real intermediate tensors for driving `retrieval` and `ranking` alone."""
    raw = pipeline.user_features.raw_columns(user_ids)
    user_cat, user_cont = pipeline.user_features.transform(raw)
    rows, _ = pipeline.retrieval(user_cat, user_cont)
    item_cat, item_cont = pipeline.item_features(rows)
    retrieval, ranking = [], []
    for i in range(len(user_ids)):
        user = {"user_categorical": user_cat[i].tolist(), "user_continuous": user_cont[i].tolist()}
        retrieval.append(user)
        ranking.append({
            **user,
            "item_categorical": {"content": item_cat[i].ravel().tolist(),
                                 "shape": list(item_cat[i].shape)},
            "item_continuous": {"content": item_cont[i].ravel().tolist(),
                                "shape": list(item_cont[i].shape)},
        })  # fmt: skip
    return {"retrieval": {"data": retrieval}, "ranking": {"data": ranking}}  # type: ignore[dict-item]


def in_process_ceiling(
    pipeline: InProcessRecommender, user_ids: np.ndarray, batch_sizes: tuple[int, ...],
    seconds: float, top_k: int,
) -> pd.DataFrame:  # fmt: skip
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


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


def plot(tables: list[pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for table in tables:
        for series, part in table.groupby("series"):
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


def markdown(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [f"{v:{floatfmt}}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(settings: Settings, plan: Plan, repository: Path, artifacts: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    loaded = held_out_users(artifacts, 300)
    held_out, items = loaded.user_ids, loaded.item_ids
    top_k = settings.serving.default_top_k
    entries = build_input_data(loaded, held_out, top_k, max_exclude=20)
    input_path = out / "input_data.json"
    input_path.write_text(json.dumps(entries))
    pipeline = InProcessRecommender(repository, 1, settings.serving)
    stage_inputs = stage_input_data(pipeline, held_out[:100])
    for name, payload in stage_inputs.items():
        (out / f"input_{name}.json").write_text(json.dumps(payload))

    print("==> Triton: perf_analyzer sweeps", flush=True)
    server = TritonServer(repository, settings.server, out / "tritonserver.log")
    with server:
        grpc = run_sweep(server.grpc_url, "grpc", input_path, out / "ensemble_grpc.csv",
                         plan.grpc_concurrency, plan.interval_ms,
                         stability_percentage=plan.stability)  # fmt: skip
        http = run_sweep(server.http_url, "http", input_path, out / "ensemble_http.csv",
                         plan.http_concurrency, plan.interval_ms,
                         stability_percentage=plan.stability)  # fmt: skip
        grpc_table = perf_table(grpc.rows, "Triton ensemble, gRPC (perf_analyzer)")
        http_table = perf_table(http.rows, "Triton ensemble, HTTP (perf_analyzer)")
        breakdown = pd.DataFrame(
            [{"concurrency": level, **row}
             for level, text in zip(plan.grpc_concurrency, grpc.stdout_by_level, strict=True)
             for row in composing_breakdown(text)]
        )  # fmt: skip
        peak = float(grpc_table["throughput"].max())
        rates = tuple(round(peak * f, 1) for f in (0.25, 0.5, 0.75))
        poisson = run_request_rates(server.grpc_url, "grpc", input_path, out / "poisson_grpc.csv",
                                    rates, plan.interval_ms, plan.stability)  # fmt: skip
        poisson_table = pd.DataFrame(
            {
                "rate": rates,
                "achieved": [float(r["Inferences/Second"]) for r in poisson.rows],
                "p99_ms": [float(r["p99 latency"]) / 1000 for r in poisson.rows],
            }  # fmt: skip
        )
        stage_tables = []
        for stage in ("retrieval", "ranking"):
            result = run_sweep(server.grpc_url, "grpc", out / f"input_{stage}.json",
                               out / f"stage_{stage}.csv", plan.stage_concurrency,
                               plan.interval_ms, model=stage,
                               stability_percentage=plan.stability)  # fmt: skip
            stage_tables.append(perf_table(result.rows, f"{stage} alone"))
        print("==> Triton HTTP: load generator", flush=True)
        triton_loadgen = [
            drive("Triton ensemble, HTTP (loadgen)",
                  f"http://{server.http_url}/v2/models/recommender/infer", entries["data"],
                  triton_infer_body, c, plan.loadgen_seconds)
            for c in plan.loadgen_concurrency
        ]  # fmt: skip

    print("==> FastAPI baseline: load generator", flush=True)
    port = settings.server.http_port + 100
    baseline = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perf_analyzer.fastapi_baseline",
            "--repository",
            str(repository),
            "--port",
            str(port),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=open(out / "fastapi.log", "w"),  # noqa: SIM115
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/docs")
        fastapi_loadgen = [
            drive("FastAPI baseline (loadgen)", f"http://127.0.0.1:{port}/recommend",
                  entries["data"], baseline_body, c, plan.loadgen_seconds)
            for c in plan.loadgen_concurrency
        ]  # fmt: skip
    finally:
        baseline.terminate()
        baseline.wait(timeout=30)

    print("==> in-process ceiling and scaling", flush=True)
    ceiling = in_process_ceiling(pipeline, held_out, plan.batch_sizes, 3.0, top_k)
    retrieval_scale = pd.DataFrame(scaling.as_rows(scaling.retrieval_scaling(plan.catalog_sizes)))
    ranking_scale = pd.DataFrame(scaling.as_rows(scaling.ranking_scaling(plan.id_cardinalities)))
    ranking_scale["id_cardinality"] = ranking_scale["id_cardinality"].astype(str)

    loadgen = pd.concat([loadgen_table(triton_loadgen), loadgen_table(fastapi_loadgen)])
    triton_curve = pd.concat([grpc_table, http_table])
    for name, frame in (("ensemble_summary", triton_curve), ("loadgen", loadgen),
                        ("composing_breakdown", breakdown), ("poisson", poisson_table),
                        ("stages", pd.concat(stage_tables)), ("in_process", ceiling),
                        ("scaling_retrieval", retrieval_scale),
                        ("scaling_ranking", ranking_scale)):  # fmt: skip
        frame.to_csv(out / f"{name}.csv", index=False)
    plot([triton_curve, loadgen], out / "throughput_vs_p99.png")

    errors = int(loadgen["errors"].sum())
    ceiling_best = float(ceiling["requests_per_s"].max())
    headline = best_under_bound(grpc_table)
    fastapi_best = best_under_bound(loadgen[loadgen["series"].str.startswith("FastAPI")])
    triton_lg_best = best_under_bound(loadgen[loadgen["series"].str.startswith("Triton")])
    p99_c1 = float(grpc_table.loc[grpc_table["concurrency"] == 1, "p99_ms"].iloc[0])
    efficiency = float(grpc_table["throughput"].max()) / ceiling_best
    top = breakdown[breakdown["concurrency"] == breakdown["concurrency"].max()]
    dominant = top.sort_values("avg_us", ascending=False).iloc[0]["model"] if len(top) else "n/a"
    paired = loadgen_table(triton_loadgen).merge(
        loadgen_table(fastapi_loadgen), on="concurrency", suffixes=("_triton", "_fastapi")
    )
    same_concurrency = (paired["throughput_triton"] / paired["throughput_fastapi"]).max()
    ratio = (f"{triton_lg_best / fastapi_best:.2f}×" if fastapi_best
             else f"FastAPI never met the bound (Triton {triton_lg_best:.0f}/s); "
                  f"at equal concurrency up to {same_concurrency:.1f}×")  # fmt: skip
    pa_vs_lg = grpc_table.merge(
        loadgen_table(triton_loadgen), on="concurrency", suffixes=("_pa", "_lg")
    )
    cross_check = ", ".join(
        f"c={r.concurrency}: {r.throughput_pa:.0f} vs {r.throughput_lg:.0f}"
        for r in pa_vs_lg.itertuples()
    )
    bound = f"p99 ≤ {P99_BOUND_MS:g} ms"
    report = out / "report.md"
    report.write_text(f"""# Serving-efficiency report

Run {out.name}: {len(held_out)} held-out users, top_k {top_k},
{settings.serving.num_candidates} candidates ranked per request, catalog of {len(items)} items,
dynamic batching delay {settings.serving.max_queue_delay_microseconds} µs,
{settings.serving.instance_count} instance(s) per stage, torch threads
{settings.serving.torch_threads}. All figures measured in this run on this machine; compare
ratios, not absolute times (shared 2-core machine; the load generators run on it too).

## Headline

| measure | value | target |
|---|---|---|
| ensemble requests/s at {bound} (gRPC, perf_analyzer) | {headline:.1f} | |
| p99 at concurrency 1 (gRPC) | {p99_c1:.1f} ms | < 20 ms |
| serving efficiency: peak ÷ in-process ceiling ({ceiling_best:.0f}/s) | {efficiency:.2f} | ≥ 0.5 |
| Triton ÷ FastAPI, requests/s at {bound} (same load generator) | {ratio} | ≥ 3× |
| load-generator errors | {errors} | 0 |
| stage with the largest share of ensemble latency | {dominant} | |

![throughput vs p99](throughput_vs_p99.png)

## Triton ensemble (perf_analyzer)

{markdown(triton_curve)}

Per composing model and gRPC concurrency (µs per request: queue, compute, overhead):

{markdown(breakdown, ".0f") if len(breakdown) else "(not reported)"}

Poisson arrivals at 25/50/75% of the peak closed-loop throughput:

{markdown(poisson_table)}

## Each stage alone through Triton

{markdown(pd.concat(stage_tables))}

## Same load generator against Triton and the FastAPI baseline

{markdown(loadgen)}

Cross-check, Triton over gRPC with perf_analyzer vs HTTP with the load generator at the
same concurrency (requests/s): {cross_check}.

## In-process ceiling (same stages, batched, no server)

{markdown(ceiling)}

## Scaling

Retrieval, one query at a time:

{markdown(retrieval_scale, ".3f")}

DLRM memory and scoring time for {settings.serving.num_candidates} candidates vs id-table size:

{markdown(ranking_scale, ".3f")}
""")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few points each, ~2 minutes")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--artifacts", type=Path, default=PROJECT_ROOT / "artifacts")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.repository / "recommender").exists():
        parser.error(f"no model repository at {args.repository}: run `make repository` first")
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    out = args.out or PROJECT_ROOT / "results" / "perf" / run_name
    report = run(load_settings(args.config), QUICK if args.quick else FULL, args.repository,
                 args.artifacts, out)  # fmt: skip
    print(report.read_text())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
