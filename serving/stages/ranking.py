"""Stage 4, ranking: the scripted DLRM scores each (user, candidate) pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recsys.contract import RANKING_MODEL_FILE


class RankingStage:
    """DLRM click probability for each (user, candidate) pair."""

    def __init__(self, version_dir: Path) -> None:
        self.scorer = torch.jit.load(str(version_dir / RANKING_MODEL_FILE))

    def __call__(
        self,
        user_cat: np.ndarray,
        user_cont: np.ndarray,
        item_cat: np.ndarray,
        item_cont: np.ndarray,
    ) -> np.ndarray:
        with torch.inference_mode():
            scores = self.scorer(
                torch.from_numpy(user_cat),
                torch.from_numpy(user_cont),
                torch.from_numpy(item_cat),
                torch.from_numpy(item_cont),
            )
        return scores.numpy().astype(np.float32)
