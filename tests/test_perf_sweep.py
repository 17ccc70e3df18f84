"""The quick perf_analyzer sweep against the test server: outputs well formed, no timing
assertions (machines are shared and noisy)."""

import json

import numpy as np
import pandas as pd
import pytest

from perf_analyzer.sweep import build_input_data, run_sweep
from serving.launcher import TritonServer
from tests.conftest import TrainedSet

pytestmark = pytest.mark.server


def test_quick_sweep_writes_a_csv_with_nonzero_throughput(
    trained: TrainedSet, triton: TritonServer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    users = trained.data.users
    held_out = trained.data.valid["user_id"].drop_duplicates().head(50).to_numpy()
    items = trained.data.items["item_id"].to_numpy()
    data = build_input_data(users, held_out, items, top_k=10, max_exclude=20)
    lengths = {len(e["exclude_item_ids"]["content"]) for e in data["data"]}
    assert len(lengths) > 1  # exclude lists of varying length
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(data))
    result = run_sweep(triton.grpc_url, "grpc", input_path, tmp_path / "sweep.csv",
                       concurrency=(1,), measurement_interval_ms=1500,
                       stability_percentage=80)  # fmt: skip
    frame = pd.read_csv(result.csv_path)
    for column in (
        "Concurrency",
        "Inferences/Second",
        "p99 latency",
        "Server Queue",
        "Server Compute Infer",
    ):
        assert column in frame.columns, list(frame.columns)
    assert (frame["Inferences/Second"] > 0).all()
    assert np.isfinite(frame["p99 latency"]).all()
