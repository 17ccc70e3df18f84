"""Offline metrics: recall@K for retrieval, AUC and logloss for ranking."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) formula, ties averaged."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def recall_at_k(retrieved: np.ndarray, relevant: list[np.ndarray]) -> float:
    """Mean over users of |top-K ∩ relevant| / |relevant|; `retrieved` is [users, K]."""
    if len(retrieved) != len(relevant):
        raise ValueError("one relevant set per retrieved row is needed")
    recalls = [
        np.isin(relevant_items, row).sum() / len(relevant_items)
        for row, relevant_items in zip(retrieved, relevant, strict=True)
        if len(relevant_items)
    ]
    return float(np.mean(recalls))


def ndcg_at_k(retrieved: np.ndarray, relevant: list[np.ndarray]) -> float:
    """Mean over users of DCG of the hits in `retrieved` [users, K] over the ideal DCG
    (binary relevance, log2 discount)."""
    if len(retrieved) != len(relevant):
        raise ValueError("one relevant set per retrieved row is needed")
    discount = 1.0 / np.log2(np.arange(retrieved.shape[1]) + 2.0)
    values = []
    for row, relevant_items in zip(retrieved, relevant, strict=True):
        if len(relevant_items):
            gains = np.isin(row, relevant_items) * discount
            ideal = discount[: min(len(relevant_items), len(discount))].sum()
            values.append(gains.sum() / ideal)
    return float(np.mean(values))


def coverage(retrieved: np.ndarray, catalog_size: int) -> float:
    """Share of the catalog that appears in at least one user's list (padding ignored)."""
    return float(len(np.unique(retrieved[retrieved >= 0])) / catalog_size)
