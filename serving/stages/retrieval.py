"""Stage 2, retrieval: query tower + exact inner-product search over the item embeddings."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import torch

from recsys.contract import ITEM_INDEX_FILE, QUERY_TOWER_FILE


class RetrievalStage:
    """Query tower + exact inner-product search over the item embeddings."""

    def __init__(self, version_dir: Path, num_candidates: int) -> None:
        self.query_tower = torch.jit.load(str(version_dir / QUERY_TOWER_FILE))
        self.index = faiss.read_index(str(version_dir / ITEM_INDEX_FILE))
        if num_candidates > self.index.ntotal:
            raise ValueError(
                f"num_candidates={num_candidates} exceeds the catalog size {self.index.ntotal}"
            )
        self.num_candidates = num_candidates

    def __call__(
        self, user_cat: np.ndarray, user_cont: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            queries = self.query_tower(torch.from_numpy(user_cat), torch.from_numpy(user_cont))
        scores, rows = self.index.search(queries.numpy(), self.num_candidates)
        return rows.astype(np.int64), scores.astype(np.float32)
