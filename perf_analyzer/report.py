"""The serving-efficiency report: perf_analyzer sweeps plus baselines, measured in one run.

    python -m perf_analyzer.report [--quick]      (make perf-report / make perf-report-quick)

On the same machine and data, one after another (never two servers at once):
  1. Triton ensemble: perf_analyzer concurrency sweeps over gRPC and HTTP (per-composing-
     model queue/compute breakdown) and Poisson request-rate runs; each stage alone
     (retrieval, ranking); Triton's HTTP endpoint driven by wrk;
  2. the platform floor: the same ensemble with no-op stages (perf_analyzer/floor.py);
  3. the FastAPI baseline driven by the same wrk at the same concurrencies;
  4. merlin-systems' export of the same pipeline (perf_analyzer/merlin_peer/), swept by
     perf_analyzer at the ensemble's gRPC concurrencies;
  5. in-process: each stage's cost at batch 1 and the batched ceiling, no server;
  6. catalog and embedding-table scaling.
A level perf_analyzer cannot stabilise is retried (longer, then count-based windows) and
marked in the report, never fatal; so is a merlin-systems peer that cannot be exported or
served. Writes CSVs, a throughput-vs-p99 plot and report.md under results/perf/<run>/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from perf_analyzer import scaling
from perf_analyzer.floor import write_floor_repository
from perf_analyzer.http_bodies import baseline_body, triton_infer_body
from perf_analyzer.in_process import in_process_ceiling, stage_latencies
from perf_analyzer.report_markdown import Measured, render
from perf_analyzer.report_peer import PEER_SERIES
from perf_analyzer.report_tables import composing_breakdown, perf_table, plot, rate_table
from perf_analyzer.sweep import (
    Attempt,
    SweepResult,
    build_input_data,
    held_out_users,
    run_request_rates,
    run_sweep,
)
from perf_analyzer.wrk import HttpLoadResult, WrkError, run_wrk
from recsys.settings import PROJECT_ROOT, Settings, load_settings
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender

# Re-exported for callers that read perf_analyzer's output through this module.
__all__ = ["composing_breakdown", "perf_table", "run", "wait_http"]


@dataclass(frozen=True)
class Plan:
    grpc_concurrency: tuple[int, ...]
    http_concurrency: tuple[int, ...]
    wrk_concurrency: tuple[int, ...]
    stage_concurrency: tuple[int, ...]
    floor_concurrency: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    catalog_sizes: tuple[int, ...]
    id_cardinalities: tuple[int, ...]
    interval_ms: int
    wrk_seconds: float
    stability: int
    in_process_requests: int


QUICK = Plan((1, 4, 16), (1, 4), (1, 4, 16), (1, 4), (1, 4), (1, 8, 64), (10_000, 100_000),
             (10_000, 1_000_000), 2000, 4.0, 60, 300)  # fmt: skip
FULL = Plan((1, 2, 4, 8, 16, 32, 64), (1, 4, 16, 64), (1, 2, 4, 8, 16, 32, 64), (1, 4, 16),
            (1, 4, 16), (1, 8, 32, 64), (10_000, 100_000, 1_000_000),
            (10_000, 1_000_000, 10_000_000), 5000, 10.0, 25, 1000)  # fmt: skip


def stage_input_data(pipeline: InProcessRecommender, user_ids: np.ndarray) -> dict[str, Any]:
    """Real intermediate tensors for driving `retrieval` and `ranking` alone."""
    raw = pipeline.user_features.raw_columns(user_ids)
    user_cat, user_cont = pipeline.user_features.transform(raw)
    rows, _ = pipeline.retrieval(user_cat, user_cont)
    retrieval, ranking = [], []
    for i in range(len(user_ids)):
        user = {"user_categorical": user_cat[i].tolist(), "user_continuous": user_cont[i].tolist()}
        retrieval.append(user)
        ranking.append({**user, "candidate_rows": rows[i].tolist()})
    return {"retrieval": {"data": retrieval}, "ranking": {"data": ranking}}


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


def breakdown_by_level(result: SweepResult, levels: tuple[int, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"concurrency": level, **row}
         for level, text in zip(levels, result.stdout_by_level, strict=True)
         for row in composing_breakdown(text)]
    )  # fmt: skip


def wrk_series(
    target: str, url: str, bodies: list[dict[str, Any]], plan: Plan, out: Path
) -> list[HttpLoadResult]:
    """wrk at each concurrency; a level wrk cannot run is left out (and said), not fatal."""
    results = []
    for level in plan.wrk_concurrency:
        try:
            results.append(run_wrk(target, url, bodies, level, plan.wrk_seconds, out / "wrk"))
        except (WrkError, subprocess.TimeoutExpired) as exc:
            print(f"{target} c={level}: not measured: {exc}", flush=True)
    return results


def serve_fastapi_and_load(
    repository: Path, port: int, bodies: list[dict[str, Any]], plan: Plan, out: Path
) -> list[HttpLoadResult]:
    baseline = subprocess.Popen(
        [sys.executable, "-m", "perf_analyzer.fastapi_baseline", "--repository",
         str(repository), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=open(out / "fastapi.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    try:
        # Two workers importing torch and NVTabular on a loaded 2-core machine can take
        # minutes to answer; a baseline that never comes up is reported, not fatal.
        try:
            wait_http(f"http://127.0.0.1:{port}/docs", timeout_s=600)
        except RuntimeError as exc:
            print(f"FastAPI baseline not measured: {exc}", flush=True)
            return []
        return wrk_series("FastAPI baseline (wrk)", f"http://127.0.0.1:{port}/recommend",
                          bodies, plan, out)  # fmt: skip
    finally:
        baseline.terminate()
        baseline.wait(timeout=30)


@dataclass(frozen=True)
class PeerRun:
    table: pd.DataFrame  # perf_table rows, empty when not measured
    attempts: tuple[Attempt, ...]
    note: str  # why the peer was not measured ("" when it was)


def measure_peer(
    settings: Settings, plan: Plan, artifacts: Path, user_ids: np.ndarray, out: Path
) -> PeerRun:
    """merlin-systems' export swept at the ensemble's gRPC levels; never fatal. A level that
    will not settle or fails is marked by the sweep like the ensemble's own levels."""
    try:
        # Imported here: a merlin-systems install that fails at import must cost the
        # report this section, not the run.
        from perf_analyzer.merlin_peer.measure import measure_merlin_peer

        result = measure_merlin_peer(
            artifacts, out / "merlin_peer", settings, plan.grpc_concurrency, user_ids,
            plan.interval_ms, "grpc", plan.stability,
        )  # fmt: skip
    except Exception as exc:  # a third-party stack: whatever it raises, the report goes on
        # The first line: a server that did not start appends its log's tail (kept in
        # merlin_peer/merlin_peer_tritonserver.log).
        note = f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
        print(f"merlin-systems peer not measured: {note}", flush=True)
        return PeerRun(perf_table([], PEER_SERIES), (), note)
    return PeerRun(perf_table(result.rows, PEER_SERIES), result.attempts, "")


def run(settings: Settings, plan: Plan, repository: Path, artifacts: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    loaded = held_out_users(artifacts, 300)
    held_out, items = loaded.user_ids, loaded.item_ids
    top_k = settings.serving.default_top_k
    entries = build_input_data(loaded, held_out, top_k, max_exclude=20)
    input_path = out / "input_data.json"
    input_path.write_text(json.dumps(entries))
    # What every served stage uses (serving.torch_threads, one faiss thread): in-process
    # figures are only comparable under the same threads.
    torch.set_num_threads(settings.serving.torch_threads)
    faiss.omp_set_num_threads(1)
    pipeline = InProcessRecommender(repository, 1, settings.serving)
    for name, payload in stage_input_data(pipeline, held_out[:100]).items():
        (out / f"input_{name}.json").write_text(json.dumps(payload))
    attempts: list[Attempt] = []

    def sweep(url: str, protocol: str, csv: str, levels: tuple[int, ...], **kw: Any) -> Any:
        result = run_sweep(url, protocol, input_path if "input" not in kw else kw.pop("input"),
                           out / csv, levels, plan.interval_ms,
                           stability_percentage=plan.stability, **kw)  # fmt: skip
        attempts.extend(result.attempts)
        return result

    print("==> Triton: perf_analyzer sweeps, wrk on HTTP", flush=True)
    with TritonServer(repository, settings.server, out / "tritonserver.log") as server:
        grpc = sweep(server.grpc_url, "grpc", "ensemble_grpc.csv", plan.grpc_concurrency)
        http = sweep(server.http_url, "http", "ensemble_http.csv", plan.http_concurrency)
        grpc_table = perf_table(grpc.rows, "Triton ensemble, gRPC (perf_analyzer)")
        http_table = perf_table(http.rows, "Triton ensemble, HTTP (perf_analyzer)")
        peak = float(grpc_table["throughput"].max())
        rates = tuple(round(peak * f, 1) for f in (0.25, 0.5, 0.75)) if peak > 0 else ()
        poisson = run_request_rates(server.grpc_url, "grpc", input_path, out / "poisson.csv",
                                    rates, plan.interval_ms, plan.stability)  # fmt: skip
        attempts.extend(poisson.attempts)
        stage_tables = [
            perf_table(sweep(server.grpc_url, "grpc", f"stage_{stage}.csv",
                             plan.stage_concurrency, input=out / f"input_{stage}.json",
                             model=stage).rows, f"{stage} alone")
            for stage in ("retrieval", "ranking")
        ]  # fmt: skip
        infer_url = f"http://{server.http_url}/v2/models/recommender/infer"
        triton_bodies = [triton_infer_body(e) for e in entries["data"]]
        triton_wrk = wrk_series("Triton ensemble, HTTP (wrk)", infer_url, triton_bodies, plan,
                                out)  # fmt: skip

    print("==> platform floor: the same ensemble with no-op stages", flush=True)
    floor_repo = write_floor_repository(repository, out / "floor_repository", top_k)
    with TritonServer(floor_repo.path, settings.server, out / "floor_tritonserver.log") as floor:
        floor_result = sweep(floor.grpc_url, "grpc", "floor_grpc.csv", plan.floor_concurrency)

    print("==> FastAPI baseline: wrk", flush=True)
    fastapi_bodies = [baseline_body(e) for e in entries["data"]]
    fastapi_wrk = serve_fastapi_and_load(repository, settings.server.http_port + 100,
                                         fastapi_bodies, plan, out)  # fmt: skip

    print("==> merlin-systems' export of the same pipeline: perf_analyzer", flush=True)
    peer = measure_peer(settings, plan, artifacts, held_out, out)
    attempts.extend(peer.attempts)

    print("==> in-process stages, ceiling and scaling", flush=True)
    measured = Measured(
        run_name=out.name, settings=settings, users=len(held_out), items=len(items),
        top_k=top_k, grpc=grpc_table, http=http_table,
        breakdown=breakdown_by_level(grpc, plan.grpc_concurrency),
        poisson=rate_table(poisson.rows),
        stages=pd.concat(stage_tables),
        wrk=pd.DataFrame([r.as_row() for r in (*triton_wrk, *fastapi_wrk)],
                         columns=list(HttpLoadResult.columns())),
        floor=perf_table(floor_result.rows, "floor: no-op stages, gRPC (perf_analyzer)"),
        floor_breakdown=breakdown_by_level(floor_result, plan.floor_concurrency),
        in_process=stage_latencies(pipeline, entries["data"], plan.in_process_requests),
        ceiling=in_process_ceiling(pipeline, held_out, plan.batch_sizes, 3.0, top_k),
        retrieval_scale=pd.DataFrame(scaling.as_rows(scaling.retrieval_scaling(
            plan.catalog_sizes))),
        ranking_scale=pd.DataFrame(scaling.as_rows(scaling.ranking_scaling(
            plan.id_cardinalities))),
        peer=peer.table, peer_note=peer.note, attempts=tuple(attempts),
    )  # fmt: skip
    for name, frame in measured.frames().items():
        frame.to_csv(out / f"{name}.csv", index=False)
    plot([pd.concat([grpc_table, http_table, measured.floor, peer.table]), measured.wrk],
         out / "throughput_vs_p99.png")  # fmt: skip
    report = out / "report.md"
    report.write_text(render(measured))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few points each, ~4 minutes")
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
