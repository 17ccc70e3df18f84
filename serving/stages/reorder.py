"""Stage 5, reordering: order by expected positives, drop excluded items, optional
sampling, top_k.

The order is log P(like | engaged) from ranking plus `retrieval_weight` x the retrieval
score (the log-odds of engaging, popularity prior included): ordering by the ranking
probability alone prefers well-liked items the user is unlikely to pick at all (measured
in docs/evaluation.md). The scores returned stay the ranking model's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.contract import CATALOG_FILE, Catalog, RowLookup, order_keys


@dataclass(frozen=True)
class Recommendation:
    item_ids: np.ndarray  # int64, raw item ids, best first
    scores: np.ndarray  # float32 click probabilities


class ReorderStage:
    """Sort candidates by score, drop excluded items, optionally sample, cut to top_k."""

    def __init__(self, version_dir: Path, max_top_k: int, retrieval_weight: float = 0.0) -> None:
        catalog = Catalog.load(version_dir / CATALOG_FILE)
        self.item_ids = catalog.item_ids
        self.popularity_decile = catalog.popularity_decile
        self._row_of = RowLookup(catalog.item_ids)
        self.max_top_k = max_top_k
        self.retrieval_weight = retrieval_weight

    def deciles_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Training-popularity decile of served items (for coverage monitoring)."""
        return self.popularity_decile[self._row_of(item_ids)]

    def __call__(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        top_k: int,
        exclude_item_ids: np.ndarray | None = None,
        temperature: float = 0.0,
        rng: np.random.Generator | None = None,
        retrieval_scores: np.ndarray | None = None,
    ) -> Recommendation:
        """One request: `rows`, `scores` (and `retrieval_scores`) are that request's
        candidates, [C] each."""
        if top_k < 1 or top_k > min(self.max_top_k, len(rows)):
            raise ValueError(
                f"top_k must be between 1 and {min(self.max_top_k, len(rows))} "
                f"(the candidates ranked per request), got {top_k}"
            )
        if not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        item_ids = self.item_ids[np.maximum(rows, 0)]
        keep = rows >= 0  # NO_CANDIDATE slots: retrieval's filters left too few items
        if exclude_item_ids is not None and len(exclude_item_ids):
            # Negative values are padding, so one request can carry ragged exclude lists.
            keep &= ~np.isin(item_ids, exclude_item_ids[exclude_item_ids >= 0])
        item_ids, scores = item_ids[keep], scores[keep]
        if retrieval_scores is not None:
            retrieval_scores = retrieval_scores[keep]
        keys = order_keys(scores, retrieval_scores, self.retrieval_weight)
        if temperature > 0:
            # Gumbel top-k draws k items without replacement from softmax(key / T).
            generator = rng or np.random.default_rng()
            keys = keys / temperature + generator.gumbel(size=len(keys))
        order = np.argsort(-keys, kind="stable")[:top_k]
        return Recommendation(item_ids[order].astype(np.int64), scores[order].astype(np.float32))
