"""Stage 5, reordering: sort by score, drop excluded items, optional sampling, top_k."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.contract import CATALOG_FILE, Catalog


@dataclass(frozen=True)
class Recommendation:
    item_ids: np.ndarray  # int64, raw item ids, best first
    scores: np.ndarray  # float32 click probabilities


class ReorderStage:
    """Sort candidates by score, drop excluded items, optionally sample, cut to top_k."""

    def __init__(self, version_dir: Path, max_top_k: int) -> None:
        catalog = Catalog.load(version_dir / CATALOG_FILE)
        self.item_ids = catalog.item_ids
        self.popularity_decile = catalog.popularity_decile
        self._row_of = pd.Index(catalog.item_ids)
        self.max_top_k = max_top_k

    def deciles_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Training-popularity decile of served items (for coverage monitoring)."""
        return self.popularity_decile[self._row_of.get_indexer(item_ids)]

    def __call__(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        top_k: int,
        exclude_item_ids: np.ndarray | None = None,
        temperature: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> Recommendation:
        """One request: `rows` and `scores` are that request's candidates, [C] each."""
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
        if temperature > 0:
            # Gumbel top-k draws k items without replacement from softmax(logit / T).
            logits = np.log(np.clip(scores, 1e-7, 1 - 1e-7)) - np.log1p(
                -np.clip(scores, 1e-7, 1 - 1e-7)
            )
            generator = rng or np.random.default_rng()
            keys = logits / temperature + generator.gumbel(size=len(logits))
            order = np.argsort(-keys, kind="stable")
        else:
            order = np.argsort(-scores, kind="stable")
        order = order[:top_k]
        return Recommendation(item_ids[order].astype(np.int64), scores[order].astype(np.float32))
