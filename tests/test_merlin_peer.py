"""merlin-systems as the measured peer: the pipeline exported by merlin-systems 23.08 as its
executor repository, served by the real tritonserver and measured by the real
perf_analyzer (perf_analyzer/merlin_peer/), and set beside the project's ensemble in the
serving-efficiency report (perf_analyzer/report.py, report_peer.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from perf_analyzer.in_process import stage_latencies
from perf_analyzer.merlin_peer.build import EXECUTOR_MODEL, build_ensemble, export_merlin_peer
from perf_analyzer.merlin_peer.libtorch_standin import serve_libtorch_models_on_python
from perf_analyzer.merlin_peer.measure import peer_input_data, peer_server_settings
from perf_analyzer.merlin_peer.operators import ORDERED_IDS, ORDERED_SCORES
from perf_analyzer.report import QUICK, measure_peer
from perf_analyzer.report_markdown import Measured, render
from perf_analyzer.report_peer import PEER_SERIES, PEER_TARGET
from perf_analyzer.report_tables import perf_table
from perf_analyzer.sweep import SweepResult, build_input_data, held_out_users, run_sweep
from perf_analyzer.wrk import HttpLoadResult
from recsys.contract import CATALOG_FILE, RANKING_FILE, USER_TABLE_FILE, Catalog
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
    """Retrieve, rank, sort by click probability: the project's own user-feature and
    retrieval stages, then the model set's catalog and ranking scorer, agree with the peer
    item for item, so the two serve the same pipeline and their speeds compare like for
    like. (The project's reorder and seen-item filter are left out: merlin-systems has no
    operator for them.)"""
    top_k = trained.settings.serving.default_top_k
    catalog = Catalog.load(trained.artifacts / "models" / CATALOG_FILE)
    scorer = torch.jit.load(str(trained.artifacts / "models" / RANKING_FILE))
    for user_id in complete_known_users(trained, 3):
        ids, scores = ask(peer, SORTED_EXECUTOR, user_id)
        users = np.array([user_id])
        user_cat, user_cont = in_process.user_features.transform(
            in_process.user_features.raw_columns(users)
        )
        rows, _ = in_process.retrieval(user_cat, user_cont, users, None, np.array([False]))
        rows = rows[:, rows[0] >= 0]  # unfilled slots: the peer drops them too
        with torch.inference_mode():
            clicks = scorer(
                *(torch.from_numpy(a) for a in (user_cat, user_cont, catalog.categorical[rows],
                                                catalog.continuous[rows]))
            ).numpy()[0]  # fmt: skip
        best = np.argsort(-clicks, kind="stable")[:top_k]
        assert ids[0].tolist() == catalog.item_ids[rows[0][best]].tolist()
        np.testing.assert_allclose(scores[0], clicks[best], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def peer_sweep(
    trained: TrainedSet, peer: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> SweepResult:
    out = tmp_path_factory.mktemp("peer_sweep")
    user_ids = held_out_users(trained.artifacts, 50).user_ids
    (out / "input.json").write_text(json.dumps(peer_input_data(user_ids)))
    return run_sweep(peer.grpc_url, "grpc", out / "input.json", out / "peer.csv", (1,), 1000,
                     model=EXECUTOR_MODEL, stability_percentage=100)  # fmt: skip


def test_perf_analyzer_measures_the_peer(peer_sweep: SweepResult) -> None:
    [row] = peer_sweep.rows
    assert row["Concurrency"] == "1"
    assert float(row["Inferences/Second"]) > 0
    assert 0 < int(row["p50 latency"]) <= int(row["p99 latency"])


def report_of(
    trained: TrainedSet,
    in_process: InProcessRecommender,
    grpc: pd.DataFrame,
    peer: pd.DataFrame,
    peer_note: str = "",
) -> Measured:
    """A report's measurements with the ensemble's and the peer's gRPC sweeps and the
    in-process stage costs; the sections this module does not test are left empty."""
    loaded = held_out_users(trained.artifacts, 20)
    entries = build_input_data(loaded, loaded.user_ids, 10, max_exclude=5)["data"]
    nothing = pd.DataFrame()
    return Measured(
        run_name="test", settings=trained.settings, users=20, items=len(loaded.item_ids),
        top_k=10, grpc=grpc, http=grpc.iloc[:0], breakdown=nothing, poisson=nothing,
        stages=nothing, wrk=pd.DataFrame(columns=list(HttpLoadResult.columns())),
        floor=perf_table([], "floor"), floor_breakdown=nothing,
        in_process=stage_latencies(in_process, entries, 5, warmup=2),
        ceiling=pd.DataFrame({"requests_per_s": [1000.0]}), retrieval_scale=nothing,
        ranking_scale=nothing, peer=peer, peer_note=peer_note, attempts=(),
    )  # fmt: skip


def test_report_sets_the_ensemble_beside_the_peer(
    trained: TrainedSet,
    triton: TritonServer,
    in_process: InProcessRecommender,
    peer_sweep: SweepResult,
    tmp_path: Path,
) -> None:
    """Both measured for real at concurrency 1: the report's peer section and headline carry
    ensemble ÷ peer requests/s as the two CSVs give it."""
    loaded = held_out_users(trained.artifacts, 50)
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(build_input_data(loaded, loaded.user_ids, 10, 5)))
    ensemble = run_sweep(triton.grpc_url, "grpc", input_path, tmp_path / "ensemble.csv", (1,),
                         1000, stability_percentage=100)  # fmt: skip
    ratio = float(ensemble.rows[0]["Inferences/Second"]) / float(
        peer_sweep.rows[0]["Inferences/Second"]
    )
    measured = report_of(
        trained, in_process, perf_table(ensemble.rows, "ensemble"),
        perf_table(peer_sweep.rows, PEER_SERIES),
    )  # fmt: skip
    report = render(measured)
    section = report.split("## merlin-systems' export of the same pipeline")[1].split("\n## ")[0]
    [row] = [line for line in section.splitlines() if line.startswith("| 1 |")]
    assert f"| {ratio:.1f}× |" in row and "stable / stable" in row
    verdict = "✓" if ratio >= PEER_TARGET else "✗"
    assert f"peak requests/s (gRPC, any p99) | {ratio:.1f}× (" in report
    assert f"/s) {verdict} | ≥ {PEER_TARGET:g}× |" in report
    assert f"at equal concurrency | c=1: {ratio:.1f}× |" in report
    [csv_ratio] = measured.frames()["merlin_peer"]["ratio"]
    assert csv_ratio == pytest.approx(ratio)


def test_a_peer_that_cannot_be_served_is_a_note_not_the_end_of_the_report(
    trained: TrainedSet,
    triton: TritonServer,
    in_process: InProcessRecommender,
    tmp_path: Path,
) -> None:
    """The peer exports, but its server finds the ports taken (the project's test server
    holds them): the report gets a note and n/a ratios, and goes on."""
    user_ids = held_out_users(trained.artifacts, 10).user_ids
    peer = measure_peer(trained.settings, QUICK, trained.artifacts, user_ids, tmp_path)
    assert peer.note.startswith("ServerStartError:") and "already in use" in peer.note
    assert peer.table.empty and peer.attempts == ()
    assert (tmp_path / "merlin_peer" / "model_repository" / EXECUTOR_MODEL).is_dir()
    grpc = perf_table([{"Concurrency": "1", "Inferences/Second": "100", "p50 latency": "5000",
                        "p99 latency": "9000"}], "ensemble")  # fmt: skip
    report = render(report_of(trained, in_process, grpc, peer.table, peer.note))
    assert f"Not measured in this run: {peer.note}" in report
    assert "peak requests/s (gRPC, any p99) | n/a (merlin-systems' export not measured" in report
