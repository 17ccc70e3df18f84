"""The item index as a config choice (serving.index): real faiss indexes built with a real
model set, their recall against exact search checked at build time, their search
parameters carried to the serving stage, and a 20k-item HNSW catalog served by the real
tritonserver with answers equal to the in-process chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from client.recommender_client import RecommendationRequest, RecommenderClient
from perf_analyzer.catalog_scale import build_model_set, scaled_settings
from recsys.ann import IndexFileError, load_index, search_parameters
from recsys.contract import ITEM_EMBEDDINGS_FILE, METRICS_FILE
from recsys.settings import IndexSettings, Settings, load_settings
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender
from serving.stages.retrieval import RetrievalStage
from training.index import IndexRecallError, build_checked_index, build_index

ITEMS = 20_000
FLOOR = 0.95


@pytest.fixture(scope="module")
def hnsw_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A real model set over 20k items with an HNSW index (small traffic: most items are
    unseen, as in a large catalog, and training stays short)."""
    index = IndexSettings.model_validate(
        {"type": "hnsw", "hnsw": {"m": 16, "ef_construction": 40, "ef_search": 256},
         "min_recall": FLOOR}
    )  # fmt: skip
    settings = scaled_settings(load_settings(), ITEMS, index)
    settings = settings.model_copy(update={
        "data": settings.data.model_copy(update={"num_users": 800, "impressions_per_user": 15}),
        "training": settings.training.model_copy(
            update={"retrieval_epochs": 2, "ranking_epochs": 1}
        ),
    })  # fmt: skip
    root = tmp_path_factory.mktemp("ann")
    build_model_set(settings, root)
    return settings, root


@pytest.fixture(scope="module")
def served(hnsw_set: tuple[Settings, Path]) -> Iterator[TritonServer]:
    settings, root = hnsw_set
    with TritonServer(root / "model_repository", settings.server, root / "triton.log") as server:
        yield server


def clustered_items(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors shaped like the model's: unit item vectors plus a log-popularity coordinate
    that sits at one floor value for most items; queries end with a prior weight."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, 16))
    items = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, 16))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    popularity = np.where(rng.random(n) < 0.8, -20.0, -rng.exponential(4.0, n))
    queries = centres[rng.integers(0, 20, 200)] + 0.3 * rng.normal(size=(200, 16))
    queries = 10 * queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return (np.hstack([items, popularity[:, None]]).astype(np.float32),
            np.hstack([queries, np.full((200, 1), 3.0)]).astype(np.float32))  # fmt: skip


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_return_inner_products_and_reach_the_floor(kind: str) -> None:
    items, queries = clustered_items(5000)
    settings = IndexSettings.model_validate({"type": kind, "min_recall": FLOOR})
    index, report = build_checked_index(items, queries, 100, settings)
    assert report.recall >= FLOOR and report.k == 100 and report.queries == 200
    scores, rows = index.search(queries[:5], 10)
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries[:5], items[rows]),
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_an_index_below_the_floor_is_refused_naming_the_setting() -> None:
    items, queries = clustered_items(5000)
    weak = IndexSettings.model_validate(
        {"type": "hnsw", "hnsw": {"m": 4, "ef_construction": 8, "ef_search": 1},
         "min_recall": 0.999}
    )  # fmt: skip
    with pytest.raises(IndexRecallError, match=r"serving\.index\.min_recall=0\.999"):
        build_checked_index(items, queries, 100, weak)


def test_search_parameters_travel_in_the_file_and_can_be_overridden(tmp_path: Path) -> None:
    items, _ = clustered_items(3000)
    for kind, name, value in (("hnsw", "efSearch", 77), ("ivf", "nprobe", 5)):
        settings = IndexSettings.model_validate(
            {"type": kind, "hnsw": {"ef_search": 77}, "ivf": {"nlist": 40, "nprobe": 5}}
        )
        path = tmp_path / f"{kind}.faiss"
        faiss.write_index(build_index(items, settings), str(path))
        assert search_parameters(load_index(path)) == {name: value}
        assert search_parameters(load_index(path, {name: 9})) == {name: 9}
    with pytest.raises(ValueError, match="nprobe=3 does not apply to a IndexHNSWFlat"):
        load_index(tmp_path / "hnsw.faiss", {"nprobe": 3})


def test_an_l2_index_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l2.faiss"
    flat = faiss.IndexFlatL2(4)
    flat.add(np.eye(4, dtype=np.float32))
    faiss.write_index(flat, str(path))
    with pytest.raises(IndexFileError, match="not inner product"):
        load_index(path)


@pytest.mark.server
def test_the_hnsw_model_set_records_its_recall_and_serves_it(
    hnsw_set: tuple[Settings, Path], served: TritonServer
) -> None:
    settings, root = hnsw_set
    metrics = json.loads((root / "artifacts" / "models" / METRICS_FILE).read_text())
    assert metrics["ann_recall_at_candidates"] >= FLOOR
    assert metrics["ann_recall_k"] == settings.serving.num_candidates
    assert metrics["ann_recall_queries"] == metrics["validation_users"]
    # What the retrieval stage loads is the HNSW index with its configured efSearch.
    stage = RetrievalStage(root / "model_repository" / "retrieval" / "1", 100)
    assert stage.index.ntotal == ITEMS
    assert stage.search_parameters == {"efSearch": 256}
    assert not isinstance(faiss.downcast_index(stage.index), faiss.IndexFlat)
    embeddings = np.load(root / "artifacts" / "models" / ITEM_EMBEDDINGS_FILE)
    assert embeddings.shape[0] == ITEMS

    users = [int(u) for u in np.unique(
        np.load(root / "model_repository" / "retrieval" / "1" / "history.npz")["user_ids"]
    )[:6]] + [7]  # fmt: skip
    client = RecommenderClient(served.grpc_url, "grpc")
    answers = client.recommend_batch([RecommendationRequest(u, 10) for u in users])
    in_process = InProcessRecommender(root / "model_repository", 1, settings.serving)
    expected = in_process.recommend(np.array(users), 10)
    for got, want in zip(answers, expected, strict=True):
        assert got.item_ids == want.item_ids.tolist()
        assert len(got.item_ids) == 10
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
