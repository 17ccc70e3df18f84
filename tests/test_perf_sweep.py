"""perf tooling against the test server: outputs well formed, no timing assertions
(machines are shared and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from client.recommender_client import RecommenderClient
from perf_analyzer.floor import ensemble_steps, write_floor_repository
from perf_analyzer.http_bodies import baseline_body, triton_infer_body
from perf_analyzer.in_process import MONITORING, stage_latencies
from perf_analyzer.report import composing_breakdown, perf_table, wait_http
from perf_analyzer.report_tables import best_under_bound
from perf_analyzer.sweep import (
    build_input_data,
    held_out_users,
    run_perf_analyzer,
    run_sweep,
    sent_feature,
)
from perf_analyzer.wrk import run_wrk
from recsys.contract import STAGE_MODEL_NAMES
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender
from tests.conftest import TrainedSet, free_port

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def input_data(trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    loaded = held_out_users(trained.artifacts, 50)
    held_out = trained.data.valid["user_id"].drop_duplicates().head(50).to_numpy()
    data = build_input_data(loaded, held_out, top_k=10, max_exclude=20)
    path = tmp_path_factory.mktemp("perf") / "input.json"
    path.write_text(json.dumps(data))
    return path


def test_input_data_uses_held_out_users_and_varied_exclude_lists(
    trained: TrainedSet, input_data: Path
) -> None:
    entries = json.loads(input_data.read_text())["data"]
    lengths = {len(e["exclude_item_ids"]["content"]) for e in entries}
    assert len(lengths) > 1
    assert {e["user_id"][0] for e in entries} <= set(trained.data.valid["user_id"])
    # The load sends one override, chosen from the schema: its first overridable category.
    feature = sent_feature(trained.schema)
    assert feature == next(n for n, f in trained.schema.user_overrides() if f.kind != "continuous")
    assert all(feature in e for e in entries)


def test_quick_sweep_writes_csv_and_composing_breakdown(
    triton: TritonServer, input_data: Path, tmp_path: Path
) -> None:
    result = run_sweep(triton.grpc_url, "grpc", input_data, tmp_path / "sweep.csv",
                       concurrency=(1,), measurement_interval_ms=1500,
                       stability_percentage=80)  # fmt: skip
    frame = pd.read_csv(result.csv_path)
    for column in ("Concurrency", "Inferences/Second", "p99 latency", "Server Queue",
                   "Server Compute Infer"):  # fmt: skip
        assert column in frame.columns, list(frame.columns)
    assert (frame["Inferences/Second"] > 0).all()
    table = perf_table(result.rows, "ensemble")
    assert np.isfinite(table["p99_ms"]).all()
    assert set(table["measurement"]) <= {"stable", "unstable"}
    breakdown = composing_breakdown(result.stdout)
    assert sorted(row["model"] for row in breakdown) == sorted(STAGE_MODEL_NAMES)
    assert all(row["compute_us"] > 0 for row in breakdown)


def test_wrk_drives_triton_http_and_its_output_parses(
    triton: TritonServer, input_data: Path, tmp_path: Path
) -> None:
    entries = json.loads(input_data.read_text())["data"]
    bodies = [triton_infer_body(e) for e in entries]
    result = run_wrk("triton", f"http://{triton.http_url}/v2/models/recommender/infer", bodies,
                     concurrency=2, seconds=2, workdir=tmp_path, warmup_s=0)  # fmt: skip
    assert result.requests > 0 and result.errors == 0, result
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.seconds >= 1.5 and result.throughput > 0


def test_wrk_counts_error_answers(triton: TritonServer, tmp_path: Path) -> None:
    """A body Triton refuses (top_k 0) is an error in wrk's summary, not a success."""
    body = {"inputs": [
        {"name": "user_id", "shape": [1, 1], "datatype": "INT64", "data": [1]},
        {"name": "top_k", "shape": [1, 1], "datatype": "INT32", "data": [0]},
    ]}  # fmt: skip
    result = run_wrk("bad", f"http://{triton.http_url}/v2/models/recommender/infer", [body],
                     concurrency=1, seconds=1, workdir=tmp_path, warmup_s=0)  # fmt: skip
    assert result.requests > 0 and result.errors == result.requests
    assert result.throughput == 0


def test_an_unstable_level_is_retried_and_marked_not_fatal(
    triton: TritonServer, input_data: Path, tmp_path: Path
) -> None:
    """A 0 % spread never settles on a real server: every mode is tried, and the last
    (count windows, any spread) gives a row marked unstable that the report parses."""
    result = run_perf_analyzer(triton.grpc_url, "grpc", input_data, tmp_path / "u.csv",
                               ["--concurrency-range=1:1"], 200, stability_percentage=0,
                               level="c=1")  # fmt: skip
    (attempt,) = result.attempts
    assert attempt.status == "unstable", attempt
    assert "any spread" in attempt.how and attempt.note.count("not stable") == 3
    table = perf_table(result.rows, "ensemble")
    assert list(table["measurement"]) == ["unstable"]
    assert np.isfinite(table["p99_ms"]).all() and (table["throughput"] > 0).all()


def test_a_level_that_cannot_be_measured_is_a_failed_row(
    triton: TritonServer, input_data: Path, tmp_path: Path
) -> None:
    result = run_sweep(triton.grpc_url, "grpc", input_data, tmp_path / "f.csv", (1,), 500,
                       model="no_such_model")  # fmt: skip
    (attempt,) = result.attempts
    assert attempt.status == "failed" and "no_such_model" in attempt.note, attempt
    table = perf_table(result.rows, "missing")
    assert list(table["measurement"]) == ["failed"] and table["concurrency"].tolist() == [1]
    assert table["throughput"].isna().all() and best_under_bound(table) == 0.0


def test_floor_repository_loads_and_answers_with_the_real_shapes(
    trained: TrainedSet, input_data: Path, tmp_path: Path
) -> None:
    floor = write_floor_repository(trained.repository, tmp_path / "floor", variable_dim=7)
    assert floor.stages == tuple(m for m, _ in ensemble_steps(trained.repository))
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(floor.path, trained.settings.server.model_copy(update=ports),
                          tmp_path / "floor.log")  # fmt: skip
    with server:
        with RecommenderClient(server.grpc_url, "grpc") as client:
            answer = client.recommend(42, 7, [1, 2])
        assert list(answer.item_ids) == [0] * 7  # zeros of the real shape: a no-op chain
        result = run_sweep(server.grpc_url, "grpc", input_data, tmp_path / "floor.csv", (1,),
                           1000, stability_percentage=80)  # fmt: skip
    assert result.rows[0]["Measurement"] in ("stable", "unstable")
    breakdown = composing_breakdown(result.stdout)
    assert sorted(row["model"] for row in breakdown) == sorted(floor.stages)


def test_in_process_stage_costs_cover_every_stage(
    in_process: InProcessRecommender, input_data: Path
) -> None:
    entries = json.loads(input_data.read_text())["data"]
    table = stage_latencies(in_process, entries, requests=10, warmup=2).set_index("stage")
    assert list(table.index) == [*STAGE_MODEL_NAMES, MONITORING, "total"]
    assert (table["in_process_us"] > 0).all()


def test_fastapi_baseline_serves_the_same_recommendations(
    trained: TrainedSet, triton: TritonServer, input_data: Path, tmp_path: Path
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perf_analyzer.fastapi_baseline",
            "--repository",
            str(trained.repository),
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "fastapi.log").open("w"),
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/docs")
        entries = json.loads(input_data.read_text())["data"][:5]
        with RecommenderClient(triton.grpc_url, "grpc") as client:
            for entry in entries:
                body = baseline_body(entry)
                answer = requests.post(f"http://127.0.0.1:{port}/recommend", json=body,
                                       timeout=30).json()  # fmt: skip
                served = client.recommend(
                    body["user_id"], body["top_k"], body["exclude_item_ids"],
                    body.get("features"),
                )  # fmt: skip
                assert answer["item_ids"] == served.item_ids
        result = run_wrk("fastapi", f"http://127.0.0.1:{port}/recommend",
                         [baseline_body(e) for e in entries], concurrency=2, seconds=2,
                         workdir=tmp_path, warmup_s=0)  # fmt: skip
        assert result.requests > 0 and result.errors == 0, result
    finally:
        process.terminate()
        process.wait(timeout=30)
