"""INT8 ranking model (training.quantize_ranking): a real build of the default synthetic
data with the switch on records the AUC change and speed-up, exports the dynamic-quantised
DLRM, and the real tritonserver's answers equal the in-process chain's with it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from client.recommender_client import RecommendationRequest, RecommenderClient
from perf_analyzer.catalog_scale import build_model_set, scaled_settings
from recsys.contract import METRICS_FILE, RANKING_FILE, RANKING_MODEL_FILE
from recsys.settings import Settings, load_settings
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender
from serving.stages.ranking import RankingStage
from training.models import DLRM
from training.quantize import quantize_dlrm

# Wide enough that the INT8 model is chosen on the default data (the measured change is
# recorded and checked against it); the default tolerance is config/default.yaml's.
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def int8_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    base = load_settings()
    settings = scaled_settings(base, base.data.num_items, base.serving.index)
    training = settings.training.model_copy(
        update={"quantize_ranking": True, "quantize_auc_tolerance": TOLERANCE}
    )
    settings = settings.model_copy(update={"training": training})
    root = tmp_path_factory.mktemp("int8")
    build_model_set(settings, root)
    return settings, root


@pytest.fixture(scope="module")
def served(int8_set: tuple[Settings, Path]) -> Iterator[TritonServer]:
    settings, root = int8_set
    with TritonServer(root / "model_repository", settings.server, root / "triton.log") as server:
        yield server


def test_quantisation_replaces_every_linear_layer_and_keeps_scores_close() -> None:
    torch.manual_seed(0)
    dlrm = DLRM([50, 7, 9], n_dense=2, emb_dim=8).eval()
    quantized = quantize_dlrm(dlrm)
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules())
    sparse, dense = torch.randint(0, 7, (64, 3)), torch.randn(64, 2)
    with torch.no_grad():
        exact, approximate = dlrm(sparse, dense), quantized(sparse, dense)
    assert not torch.equal(exact, approximate)  # the weights really are INT8
    torch.testing.assert_close(approximate, exact, atol=0.05, rtol=0.05)


def test_the_build_records_the_auc_change_and_speed_up(int8_set: tuple[Settings, Path]) -> None:
    _, root = int8_set
    metrics = json.loads((root / "artifacts" / "models" / METRICS_FILE).read_text())
    change = metrics["ranking_int8_auc_change"]
    assert change == pytest.approx(metrics["ranking_int8_auc"] - metrics["ranking_auc"], abs=1e-9)
    assert abs(change) <= TOLERANCE and metrics["ranking_int8_served"] == 1
    assert metrics["ranking_int8_float_ms"] > 0 and metrics["ranking_int8_ms"] > 0
    assert metrics["ranking_int8_candidates"] == 100


def test_the_exported_ranking_model_is_int8_and_loads_in_the_stage(
    int8_set: tuple[Settings, Path],
) -> None:
    _, root = int8_set
    exported = torch.jit.load(str(root / "artifacts" / "models" / RANKING_FILE))
    assert "quantized" in str(exported.inlined_graph)
    stage = RankingStage(root / "model_repository" / "ranking" / "1")
    assert (root / "model_repository" / "ranking" / "1" / RANKING_MODEL_FILE).exists()
    assert "quantized" in str(stage.scorer.inlined_graph)


@pytest.mark.server
def test_served_answers_equal_in_process_with_the_int8_model(
    int8_set: tuple[Settings, Path], served: TritonServer
) -> None:
    settings, root = int8_set
    history = np.load(root / "model_repository" / "retrieval" / "1" / "history.npz")
    users = [int(u) for u in np.unique(history["user_ids"])[:7]] + [7]
    answers = RecommenderClient(served.grpc_url, "grpc").recommend_batch(
        [RecommendationRequest(u, 10) for u in users]
    )
    expected = InProcessRecommender(root / "model_repository", 1, settings.serving).recommend(
        np.array(users), 10
    )
    for got, want in zip(answers, expected, strict=True):
        assert got.item_ids == want.item_ids.tolist()
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
