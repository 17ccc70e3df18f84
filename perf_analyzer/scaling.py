"""How serving cost grows with the catalog and the embedding tables (in-process, CPU).

Retrieval: exact inner-product search (faiss IndexFlatIP) against an approximate HNSW
index over 10k / 100k / 1M unit vectors of the two-tower's width; query latency per user,
index memory, and the approximate index's recall@K against the exact answer.
Ranking: DLRM parameter memory and scoring latency for 100 candidates as the id
embedding tables grow.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import faiss
import numpy as np
import torch

from training.models import DLRM, RankingScorer


@dataclass(frozen=True)
class RetrievalScale:
    items: int
    index: str
    build_s: float
    query_ms: float
    memory_mb: float
    recall_vs_exact: float


@dataclass(frozen=True)
class RankingScale:
    id_cardinality: int
    parameters_mb: float
    score_100_ms: float


def _unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _time_queries(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    index.search(queries[:5], k)  # warm up
    started = time.perf_counter()
    rows = np.vstack([index.search(q[None, :], k)[1] for q in queries])
    return (time.perf_counter() - started) * 1000 / len(queries), rows


def retrieval_scaling(
    sizes: tuple[int, ...], dim: int = 32, k: int = 100, queries: int = 200, seed: int = 0
) -> list[RetrievalScale]:
    rng = np.random.default_rng(seed)
    faiss.omp_set_num_threads(1)
    results = []
    for n in sizes:
        items = _unit_vectors(n, dim, rng)
        query = _unit_vectors(queries, dim, rng)
        exact_rows = None
        for name in ("exact (IndexFlatIP)", "HNSW32 (efSearch 128)"):
            started = time.perf_counter()
            if name.startswith("exact"):
                index: faiss.Index = faiss.IndexFlatIP(dim)
            else:
                index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = 64
                index.hnsw.efSearch = 128
            index.add(items)
            build_s = time.perf_counter() - started
            query_ms, rows = _time_queries(index, query, k)
            if exact_rows is None:
                exact_rows = rows
            recall = float(np.mean([len(np.intersect1d(a, b)) / k
                                    for a, b in zip(rows, exact_rows, strict=True)]))  # fmt: skip
            memory_mb = len(faiss.serialize_index(index)) / 2**20
            results.append(RetrievalScale(n, name, build_s, query_ms, memory_mb, recall))
    return results


def ranking_scaling(cardinalities: tuple[int, ...], candidates: int = 100) -> list[RankingScale]:
    torch.set_num_threads(1)
    results = []
    for cardinality in cardinalities:
        # Two id tables (user, item) of this size plus the small side-feature tables.
        dlrm = DLRM([cardinality, 15, 6, 2049, cardinality, 26, 410], n_dense=2, emb_dim=16)
        scorer = torch.jit.script(RankingScorer(dlrm).eval())
        memory_mb = sum(p.numel() * p.element_size() for p in dlrm.parameters()) / 2**20
        user_cat = torch.randint(0, 6, (1, 4))
        item_cat = torch.randint(0, 6, (1, candidates, 3))
        user_cont, item_cont = torch.zeros(1, 1), torch.zeros(1, candidates, 1)
        with torch.inference_mode():
            for _ in range(5):
                scorer(user_cat, user_cont, item_cat, item_cont)
            started = time.perf_counter()
            for _ in range(50):
                scorer(user_cat, user_cont, item_cat, item_cont)
        score_ms = (time.perf_counter() - started) * 1000 / 50
        results.append(RankingScale(cardinality, memory_mb, score_ms))
    return results


def as_rows(results: list[RetrievalScale] | list[RankingScale]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
