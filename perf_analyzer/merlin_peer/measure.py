"""The exported peer served by the project's tritonserver and driven by perf_analyzer, with
the same held-out users and the same retrying, marking sweep (sweep.run_sweep) as the
project's own ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from perf_analyzer.merlin_peer.build import EXECUTOR_MODEL, export_merlin_peer
from perf_analyzer.sweep import SweepResult, run_sweep
from recsys.contract import REQUEST_USER_ID
from recsys.settings import ServerSettings, Settings
from serving.launcher import TritonServer


def peer_input_data(user_ids: np.ndarray) -> dict[str, list[dict[str, object]]]:
    """perf_analyzer `--input-data` for the executor: each held-out user as its only input
    (the peer has no top_k, exclusions or overrides). The executor is exported without
    `max_batch_size`, so the shape includes the batch dimension of 1."""
    return {
        "data": [
            {REQUEST_USER_ID: {"content": [int(user_id)], "shape": [1]}} for user_id in user_ids
        ]
    }


def peer_server_settings(server: ServerSettings) -> ServerSettings:
    """The exported repository has no `recommender`: load whatever it holds."""
    return server.model_copy(update={"model_control_mode": "none"})


def measure_merlin_peer(
    artifacts: Path,
    out: Path,
    settings: Settings,
    concurrency: tuple[int, ...],
    user_ids: np.ndarray,
    measurement_interval_ms: int = 2000,
    protocol: str = "grpc",
    stability_percentage: int = 60,
    repository: Path | None = None,
) -> SweepResult:
    """Export the peer (unless `repository` is given), serve it on `settings.server`'s ports
    (nothing else may hold them) and sweep it with `user_ids` as the load; writes under
    `out`. The rows are the project's sweep rows (`Concurrency`, `Inferences/Second`,
    `p50 latency`, `p99 latency` in µs, `Measurement`): unstable or failed levels marked,
    never raised."""
    out.mkdir(parents=True, exist_ok=True)
    if repository is None:
        repository = export_merlin_peer(artifacts, out / "model_repository", settings)
    input_path = out / "merlin_peer_input.json"
    input_path.write_text(json.dumps(peer_input_data(user_ids)))
    server = TritonServer(
        repository, peer_server_settings(settings.server), out / "merlin_peer_tritonserver.log"
    )
    with server:
        url = server.grpc_url if protocol == "grpc" else server.http_url
        return run_sweep(
            url, protocol, input_path, out / f"merlin_peer_{protocol}.csv", concurrency,
            measurement_interval_ms, EXECUTOR_MODEL, stability_percentage,
        )  # fmt: skip
