"""The baselines every quality number is reported beside, on the same split and filters:
most-popular (training positives) and implicit's ALS, a well-kept classical
collaborative-filtering model. Both return ranked catalog rows per user, as the model's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.contract import LABEL, Catalog, first_allowed, take_allowed


def most_popular_rows(train: pd.DataFrame, item_id: str, catalog: Catalog) -> np.ndarray:
    """Catalog rows by number of training positives, most first (then every other item)."""
    counts = train[train[LABEL] > 0][item_id].value_counts()
    rows = pd.Index(catalog.item_ids).get_indexer(counts.index.to_numpy())
    ranked = rows[rows >= 0]
    rest = np.setdiff1d(np.arange(len(catalog.item_ids)), ranked)
    return np.concatenate([ranked, rest]).astype(np.int64)


def filtered(ranked: np.ndarray, seen: list[np.ndarray], k: int) -> np.ndarray:
    """[U, k] rows of `ranked` ([U, depth], or one [depth] list for everyone) without each
    user's `seen` rows, NO_CANDIDATE-padded, as the served retrieval filters."""
    if ranked.ndim == 1:
        ranked = np.broadcast_to(ranked, (len(seen), len(ranked)))
    return take_allowed(ranked, first_allowed(ranked, seen, k), -1)


def als_rows(
    train: pd.DataFrame,
    user_id: str,
    item_id: str,
    catalog: Catalog,
    users: np.ndarray,
    depth: int,
    factors: int = 64,
    regularization: float = 0.05,
    iterations: int = 15,
    seed: int = 0,
) -> np.ndarray:
    """[U, depth] catalog rows by implicit's ALS, fit on training positives. Users without
    training positives get the most-popular list (ALS has no vector for them)."""
    from implicit.als import AlternatingLeastSquares  # heavy: only evaluation needs it
    from threadpoolctl import threadpool_limits

    positives = train[train[LABEL] > 0]
    known = np.unique(positives[user_id].to_numpy(np.int64))
    user_rows = np.searchsorted(known, positives[user_id].to_numpy(np.int64))
    item_rows = pd.Index(catalog.item_ids).get_indexer(positives[item_id].to_numpy())
    matrix = sp.csr_matrix(
        (np.ones(len(positives), dtype=np.float32), (user_rows, item_rows)),
        shape=(len(known), len(catalog.item_ids)),
    )
    model = AlternatingLeastSquares(
        factors=factors, regularization=regularization, iterations=iterations, random_state=seed
    )
    # implicit asks for a single-threaded BLAS: its own loop is the parallel one.
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    popular = most_popular_rows(train, item_id, catalog)[:depth]
    ranked = np.tile(popular, (len(users), 1))
    position = np.searchsorted(known, users)
    present = (position < len(known)) & (known[np.minimum(position, len(known) - 1)] == users)
    if present.any():
        scores = model.user_factors[position[present]] @ model.item_factors.T
        ranked[present] = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return ranked.astype(np.int64)
