"""merlin-systems as the measured peer: the pipeline exported by merlin-systems 23.08 as its
executor repository, served by the real tritonserver and measured by the real
perf_analyzer (perf_analyzer/merlin_peer.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from perf_analyzer.merlin_peer import (
    EXECUTOR_MODEL,
    ORDERED_IDS,
    ORDERED_SCORES,
    build_ensemble,
    export_merlin_peer,
    peer_input_data,
    peer_server_settings,
    run_merlin_peer_sweep,
    serve_libtorch_models_on_python,
)
from recsys.contract import CATALOG_FILE, USER_TABLE_FILE, Catalog
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender
from tests.conftest import TrainedSet, free_port

pytestmark = pytest.mark.server
# The deterministic variant (TopKByScore) served beside the default SoftmaxSampling one.
SORTED_EXECUTOR = "executor_sorted"


@pytest.fixture(scope="module")
def peer_repository(trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = export_merlin_peer(
        trained.artifacts, tmp_path_factory.mktemp("merlin_peer") / "repository", trained.settings
    )
    # A second executor over the same exported sub-models (same graph up to the ordering,
    # so merlin-systems gives them the same names and contents).
    serving = trained.settings.serving
    build_ensemble(
        trained.artifacts, serving.num_candidates, serving.default_top_k, ordering="sort"
    ).export(str(repository), name=SORTED_EXECUTOR)
    serve_libtorch_models_on_python(repository, serving.torch_threads)
    return repository


@pytest.fixture(scope="module")
def peer(trained: TrainedSet, peer_repository: Path) -> Iterator[TritonServer]:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(
        peer_repository,
        peer_server_settings(trained.settings.server.model_copy(update=ports)),
        peer_repository.parent / "tritonserver.log",
    )
    with server:
        yield server


def ask(server: TritonServer, model: str, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("user_id", [1], "INT64")
    tensor.set_data_from_numpy(np.array([user_id], dtype=np.int64))
    result = client.infer(model, [tensor])
    return result.as_numpy(ORDERED_IDS), result.as_numpy(ORDERED_SCORES)


def complete_known_users(trained: TrainedSet, n: int) -> list[int]:
    """Users seen in training whose stored features have no nulls: the peer sends a missing
    string feature as "" (OOV), the project as null, so only these are compared."""
    users = pd.read_parquet(trained.artifacts / "models" / USER_TABLE_FILE).dropna()
    user_id = trained.schema.users.id
    known = trained.data.train[user_id].drop_duplicates()
    return known[known.isin(users[user_id])].head(n).astype(int).tolist()


def test_export_is_merlin_systems_executor_repository(peer_repository: Path) -> None:
    def config(model: str) -> model_config_pb2.ModelConfig:
        text = (peer_repository / model / "config.pbtxt").read_text()
        return text_format.Parse(text, model_config_pb2.ModelConfig())

    executor = config(EXECUTOR_MODEL)
    assert executor.platform == "merlin_executor"
    assert [i.name for i in executor.input] == ["user_id"]
    assert (peer_repository / EXECUTOR_MODEL / "1" / "ensemble" / "ensemble.pkl").exists()
    workflow = config("0_transformworkflowtriton")
    assert workflow.parameters["python_module"].string_value.endswith("workflow_model")
    # Both PredictPyTorch models: exported for libtorch, moved to the Python backend.
    for name in ("1_predictpytorchtriton", "2_predictpytorchtriton"):
        torch_model = config(name)
        assert (torch_model.backend, torch_model.platform) == ("python", "")
        assert (peer_repository / name / "1" / "model.pt").exists()
        assert "LibtorchStandIn" in (peer_repository / name / "1" / "model.py").read_text()


def test_known_user_gets_top_k_valid_items(trained: TrainedSet, peer: TritonServer) -> None:
    catalog = Catalog.load(trained.artifacts / "models" / CATALOG_FILE)
    top_k = trained.settings.serving.default_top_k
    for user_id in complete_known_users(trained, 3):
        ids, scores = ask(peer, EXECUTOR_MODEL, user_id)
        assert ids.shape == scores.shape == (1, top_k)
        assert np.isin(ids, catalog.item_ids).all()
        assert len(set(ids[0].tolist())) == top_k
        assert ((scores > 0) & (scores < 1)).all()


def test_sorted_peer_ranks_like_the_project_stages(
    trained: TrainedSet, peer: TritonServer, in_process: InProcessRecommender
) -> None:
    """Retrieve, rank, sort by click probability: the project's own stage objects and the
    peer agree item for item, so the two serve the same pipeline and their speeds compare
    like for like. (The project's reorder and seen-item filter are left out: merlin-systems
    has no operator for them.)"""
    top_k = trained.settings.serving.default_top_k
    catalog = Catalog.load(trained.artifacts / "models" / CATALOG_FILE)
    for user_id in complete_known_users(trained, 3):
        ids, scores = ask(peer, SORTED_EXECUTOR, user_id)
        users = np.array([user_id])
        user_cat, user_cont = in_process.user_features.transform(
            in_process.user_features.raw_columns(users)
        )
        rows, _ = in_process.retrieval(user_cat, user_cont, users, None, np.array([False]))
        item_cat, item_cont = in_process.item_features(rows)
        clicks = in_process.ranking(user_cat, user_cont, item_cat, item_cont)[0]
        best = np.argsort(-clicks, kind="stable")[:top_k]
        assert ids[0].tolist() == catalog.item_ids[rows[0][best]].tolist()
        np.testing.assert_allclose(scores[0], clicks[best], rtol=1e-5, atol=1e-6)


def test_perf_analyzer_measures_the_peer(
    trained: TrainedSet, peer: TritonServer, tmp_path: Path
) -> None:
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(peer_input_data(trained.artifacts, 50)))
    result = run_merlin_peer_sweep(
        peer.grpc_url, "grpc", input_path, tmp_path / "peer.csv", (1,),
        measurement_interval_ms=1000, stability_percentage=100,
    )  # fmt: skip
    [row] = result.rows
    assert row["Concurrency"] == "1"
    assert float(row["Inferences/Second"]) > 0
    assert 0 < int(row["p50 latency"]) <= int(row["p99 latency"])
