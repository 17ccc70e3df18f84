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
from perf_analyzer.loadgen import baseline_body, drive, triton_infer_body
from perf_analyzer.report import composing_breakdown, perf_table, wait_http
from perf_analyzer.sweep import build_input_data, held_out_users, run_sweep, sent_feature
from recsys.contract import STAGE_MODEL_NAMES
from serving.launcher import TritonServer
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
    breakdown = composing_breakdown(result.stdout)
    assert sorted(row["model"] for row in breakdown) == sorted(STAGE_MODEL_NAMES)
    assert all(row["compute_us"] > 0 for row in breakdown)


def test_load_generator_drives_triton_http_without_errors(
    triton: TritonServer, input_data: Path
) -> None:
    entries = json.loads(input_data.read_text())["data"]
    result = drive("triton", f"http://{triton.http_url}/v2/models/recommender/infer", entries,
                   triton_infer_body, concurrency=2, duration_s=2.0, warmup_s=0.5)  # fmt: skip
    assert result.requests > 0 and result.errors == 0


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
        result = drive("fastapi", f"http://127.0.0.1:{port}/recommend", entries, baseline_body,
                       concurrency=2, duration_s=2.0, warmup_s=0.5)  # fmt: skip
        assert result.requests > 0 and result.errors == 0
    finally:
        process.terminate()
        process.wait(timeout=30)
