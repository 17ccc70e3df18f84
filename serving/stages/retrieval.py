"""Stage 2, retrieval: query tower + exact inner-product search over the item embeddings,
minus what the user already consumed (the history shipped with the model set) and what
the request excludes; more neighbours are searched so that filters do not shorten the
candidate list while the catalog has enough items."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from recsys.contract import (
    CATALOG_FILE,
    HISTORY_FILE,
    ITEM_INDEX_FILE,
    NO_CANDIDATE,
    QUERY_TOWER_FILE,
    Catalog,
    History,
    first_allowed,
    take_allowed,
)


class RetrievalStage:
    def __init__(self, version_dir: Path, num_candidates: int) -> None:
        self.query_tower = torch.jit.load(str(version_dir / QUERY_TOWER_FILE))
        self.index = faiss.read_index(str(version_dir / ITEM_INDEX_FILE))
        if num_candidates > self.index.ntotal:
            raise ValueError(
                f"num_candidates={num_candidates} exceeds the catalog size {self.index.ntotal}"
            )
        self.num_candidates = num_candidates
        self.history = History.load(version_dir / HISTORY_FILE)
        self._row_of = pd.Index(Catalog.load(version_dir / CATALOG_FILE).item_ids)

    def excluded_rows(
        self,
        user_ids: np.ndarray | None,
        exclude_item_ids: list[np.ndarray] | None,
        filter_seen: np.ndarray | None,
    ) -> list[np.ndarray]:
        """Per request row: catalog rows not to retrieve (its consumed items unless
        `filter_seen` is False for it, and its excluded ids; negative ids are padding)."""
        n = len(user_ids) if user_ids is not None else len(exclude_item_ids or [])
        excluded = [np.empty(0, dtype=np.int64) for _ in range(n)]
        if user_ids is not None:
            for i, rows in enumerate(self.history.of(user_ids)):
                if filter_seen is None or filter_seen[i]:
                    excluded[i] = rows
        if exclude_item_ids is not None:
            for i, ids in enumerate(exclude_item_ids):
                rows = self._row_of.get_indexer(ids[ids >= 0])
                excluded[i] = np.union1d(excluded[i], rows[rows >= 0])
        return excluded

    def __call__(
        self,
        user_cat: np.ndarray,
        user_cont: np.ndarray,
        user_ids: np.ndarray | None = None,
        exclude_item_ids: list[np.ndarray] | None = None,
        filter_seen: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """[B, C] candidate rows (NO_CANDIDATE where filters left too few items) and their
        inner-product scores."""
        with torch.inference_mode():
            queries = self.query_tower(torch.from_numpy(user_cat), torch.from_numpy(user_cont))
        queries = queries.numpy()
        excluded = self.excluded_rows(user_ids, exclude_item_ids, filter_seen)
        widest = max((len(rows) for rows in excluded), default=0)
        depth = min(self.num_candidates + widest, self.index.ntotal)
        scores, ranked = self.index.search(queries, depth)
        if not widest:
            return ranked.astype(np.int64), scores.astype(np.float32)
        positions = first_allowed(ranked, excluded, self.num_candidates)
        rows = take_allowed(ranked, positions, NO_CANDIDATE).astype(np.int64)
        return rows, take_allowed(scores, positions, np.nan).astype(np.float32)
