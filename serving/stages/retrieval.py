"""Stage 2, retrieval: the query tower (user features + the user's stored history + the
request's session items) and inner-product search over the item vectors (exact or the
approximate index the model set was built with, serving.index), minus what
the user already consumed (stored history and session items) and what the request
excludes; more neighbours are searched so that filters do not shorten the candidate list
while the catalog has enough items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recsys.ann import load_index, search_parameters
from recsys.contract import (
    CATALOG_FILE,
    HISTORY_FILE,
    ITEM_INDEX_FILE,
    NO_CANDIDATE,
    QUERY_TOWER_FILE,
    Catalog,
    History,
    RowLookup,
    first_allowed,
    history_matrix,
    take_allowed,
)


class RetrievalStage:
    def __init__(
        self,
        version_dir: Path,
        num_candidates: int,
        search_overrides: dict[str, int] | None = None,
    ) -> None:
        self.query_tower = torch.jit.load(str(version_dir / QUERY_TOWER_FILE))
        # Searched with the efSearch / nprobe its recall was checked with at build time
        # (stored in the file) unless the caller overrides them.
        self.index = load_index(version_dir / ITEM_INDEX_FILE, search_overrides)
        self.search_parameters = search_parameters(self.index)
        if num_candidates > self.index.ntotal:
            raise ValueError(
                f"num_candidates={num_candidates} exceeds the catalog size {self.index.ntotal}"
            )
        self.num_candidates = num_candidates
        self.history = History.load(version_dir / HISTORY_FILE)
        self.history_length = int(self.query_tower.history_length)
        self._row_of = RowLookup(Catalog.load(version_dir / CATALOG_FILE).item_ids)

    def session_rows(self, history_item_ids: list[np.ndarray] | None) -> list[np.ndarray] | None:
        """Catalog rows of each request row's session items (unknown ids and -1 padding
        dropped: an item the model set does not know cannot be pooled or recommended)."""
        if history_item_ids is None:
            return None
        rows = [self._row_of(ids[ids >= 0]) for ids in history_item_ids]
        return [r[r >= 0].astype(np.int64) for r in rows]

    def excluded_rows(
        self,
        user_ids: np.ndarray | None,
        exclude_item_ids: list[np.ndarray] | None,
        filter_seen: np.ndarray | None,
        session: list[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Per request row: catalog rows not to retrieve (its consumed items, stored and
        sent, unless `filter_seen` is False for it, and its excluded ids; negative ids are
        padding)."""
        n = len(user_ids) if user_ids is not None else len(exclude_item_ids or session or [])
        excluded = [np.empty(0, dtype=np.int64) for _ in range(n)]
        if user_ids is not None:
            for i, rows in enumerate(self.history.of(user_ids)):
                if filter_seen is None or filter_seen[i]:
                    excluded[i] = rows
        for i, rows in enumerate(session or []):
            if len(rows) and (filter_seen is None or filter_seen[i]):
                excluded[i] = np.union1d(excluded[i], rows)
        if exclude_item_ids is not None:
            for i, ids in enumerate(exclude_item_ids):
                rows = self._row_of(ids[ids >= 0])
                excluded[i] = np.union1d(excluded[i], rows[rows >= 0])
        return excluded

    def queries(
        self,
        user_cat: np.ndarray,
        user_cont: np.ndarray,
        user_ids: np.ndarray | None,
        session: list[np.ndarray] | None,
    ) -> np.ndarray:
        """[B, D + 1] query vectors; without user ids or session items the history input is
        empty (the user-features-and-popularity query)."""
        ids = user_ids if user_ids is not None else np.full(len(user_cat), -1, dtype=np.int64)
        history = history_matrix(self.history, ids, self.history_length, session)
        with torch.inference_mode():
            return self.query_tower(
                torch.from_numpy(user_cat), torch.from_numpy(user_cont), torch.from_numpy(history)
            ).numpy()

    def __call__(
        self,
        user_cat: np.ndarray,
        user_cont: np.ndarray,
        user_ids: np.ndarray | None = None,
        exclude_item_ids: list[np.ndarray] | None = None,
        filter_seen: np.ndarray | None = None,
        history_item_ids: list[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """[B, C] candidate rows (NO_CANDIDATE where filters left too few items) and their
        scores (inner products: the log-odds of engaging, popularity prior included)."""
        session = self.session_rows(history_item_ids)
        queries = self.queries(user_cat, user_cont, user_ids, session)
        excluded = self.excluded_rows(user_ids, exclude_item_ids, filter_seen, session)
        widest = max((len(rows) for rows in excluded), default=0)
        depth = min(self.num_candidates + widest, self.index.ntotal)
        scores, ranked = self.index.search(queries, depth)
        # An approximate index can return fewer neighbours than asked (-1 labels): those go
        # through the filter below, which never lets a negative row through.
        if not widest and (ranked >= 0).all():
            return ranked.astype(np.int64), scores.astype(np.float32)
        positions = first_allowed(ranked, excluded, self.num_candidates)
        rows = take_allowed(ranked, positions, NO_CANDIDATE).astype(np.int64)
        return rows, take_allowed(scores, positions, np.nan).astype(np.float32)
