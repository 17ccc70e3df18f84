"""The item index, built with the model set as `serving.index` configures it.

Item vectors are [N, D + 1] (the last coordinate is the item's log recent popularity) and
queries end with the prior weight, so a plain inner product is the served score: every
index here answers inner products. An approximate index (HNSW, IVF) is checked against
exact search on real queries at build time; `check_recall` refuses one whose
recall@num_candidates is below `serving.index.min_recall`.

Why the approximate indexes search a reduced space: faiss' HNSW and IVF with
METRIC_INNER_PRODUCT reached recall@100 0.36 (HNSW, efSearch 2048) and 0.55 (IVF, nprobe
16 of 64) on this model's vectors (20k items), because the popularity coordinate
dominates and most items share its floor value. The standard MIPS-to-nearest-neighbour
reduction (Bachrach et al., RecSys 2014) fixes that: items get one more coordinate
sqrt(max ||v||^2 - ||v||^2) and queries a 0, so L2 order equals inner-product order
(recall 1.0 at efSearch 256 on the same vectors). The index file is one faiss index:
IndexRefineFlat(IndexPreTransform(append-0, L2 index over the augmented items)) with the
original vectors for exact re-scoring, so `search` takes the [B, D + 1] queries and returns
true inner products, as IndexFlatIP does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import faiss
import numpy as np

from recsys.ann import apply_search_parameters
from recsys.settings import IndexSettings


class IndexRecallError(ValueError):
    """An approximate index whose measured recall is below the configured floor."""


@dataclass(frozen=True)
class IndexReport:
    """What the build measured, as metrics.json records it."""

    recall: float  # recall@k of the index against exact search (1.0 for exact)
    k: int
    queries: int
    build_seconds: float

    def metrics(self) -> dict[str, float | int]:
        return {
            "ann_recall_at_candidates": self.recall,
            "ann_recall_k": self.k,
            "ann_recall_queries": self.queries,
            "ann_build_seconds": self.build_seconds,
        }


def ivf_lists(settings: IndexSettings, items: int) -> int:
    """Configured nlist, or 4 x sqrt(N) (faiss' rule of thumb), never more than items / 39
    so that k-means has the 39 points per centroid faiss asks for."""
    wanted = settings.ivf.nlist or int(4 * math.sqrt(items))
    return max(1, min(wanted, items // 39))


def build_index(embeddings: np.ndarray, settings: IndexSettings) -> faiss.Index:
    """An inner-product index over `embeddings` of the configured type, its search
    parameters set (they are written into the index file with it)."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = vectors.shape
    if settings.type == "exact":
        index: faiss.Index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index
    if settings.type == "hnsw":
        inner: faiss.Index = faiss.IndexHNSWFlat(dim + 1, settings.hnsw.m, faiss.METRIC_L2)
        inner.hnsw.efConstruction = settings.hnsw.ef_construction
    else:
        inner = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, ivf_lists(settings, n),
                                   faiss.METRIC_L2)  # fmt: skip
    index = reduced_inner_product(vectors, inner)
    apply_search_parameters(index, configured_search_parameters(settings))
    return index


def reduced_inner_product(vectors: np.ndarray, inner: faiss.Index) -> faiss.Index:
    """`inner` (an empty L2 index of width D + 2) over the augmented items, wrapped so that
    callers search with [B, D + 1] queries and get exact inner products back."""
    n, dim = vectors.shape
    norms = np.einsum("ij,ij->i", vectors, vectors)
    extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None]
    augmented = np.ascontiguousarray(np.hstack([vectors, extra]), dtype=np.float32)
    if not inner.is_trained:
        inner.train(augmented)
    inner.add(augmented)
    append_zero = faiss.LinearTransform(dim, dim + 1, False)
    faiss.copy_array_to_vector(np.eye(dim + 1, dim, dtype=np.float32).ravel(), append_zero.A)
    append_zero.is_trained = True
    base = faiss.IndexPreTransform(append_zero, inner)
    # IndexRefine wants both sides to share a metric; only the refine side's is used for
    # the returned scores, the base only proposes candidate rows.
    base.metric_type = faiss.METRIC_INNER_PRODUCT
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    index = faiss.IndexRefine(base, exact)
    # The wrapper owns its parts: the Python objects may go, the index must not.
    base.own_fields = index.own_fields = index.own_refine_index = True
    inner.this.disown()
    append_zero.this.disown()
    base.this.disown()
    exact.this.disown()
    return index


def configured_search_parameters(settings: IndexSettings) -> dict[str, int]:
    if settings.type == "hnsw":
        return {"efSearch": settings.hnsw.ef_search}
    if settings.type == "ivf":
        return {"nprobe": settings.ivf.nprobe}
    return {}


def recall_against_exact(
    index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int
) -> float:
    """Mean share of each query's exact top-k that `index` also returns in its top k."""
    exact = faiss.IndexFlatIP(embeddings.shape[1])
    exact.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    # -1 (fewer than k found, e.g. too few IVF lists probed) never matches a true row.
    hits = [np.intersect1d(t, f[f >= 0]).size for t, f in zip(truth, found, strict=True)]
    return float(np.mean(hits) / k)


def measure(
    index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int, build_seconds: float
) -> IndexReport:
    k = min(k, index.ntotal)
    # Exact search is its own reference: no second search of the whole catalog needed.
    exact = isinstance(faiss.downcast_index(index), faiss.IndexFlat)
    recall = 1.0 if exact else recall_against_exact(index, embeddings, queries, k)
    return IndexReport(recall, k, len(queries), build_seconds)


def check_recall(report: IndexReport, settings: IndexSettings) -> None:
    if report.recall < settings.min_recall:
        parameters = configured_search_parameters(settings)
        raise IndexRecallError(
            f"serving.index: the {settings.type} index reaches recall@{report.k} "
            f"{report.recall:.4f} against exact search on {report.queries} evaluation "
            f"queries, below serving.index.min_recall={settings.min_recall} (search "
            f"parameters {parameters}); raise serving.index.{settings.type} search or build "
            "parameters, or lower the floor"
        )


def build_checked_index(
    embeddings: np.ndarray, queries: np.ndarray, k: int, settings: IndexSettings
) -> tuple[faiss.Index, IndexReport]:
    """Build the configured index, measure its recall@k on `queries`, refuse it below the
    floor."""
    started = time.perf_counter()
    index = build_index(embeddings, settings)
    report = measure(index, embeddings, queries, k, time.perf_counter() - started)
    check_recall(report, settings)
    return index, report
