"""Stage 3, ranking: the DLRM scores each (user, candidate) pair, with the candidates' item
features looked up inside the model.

The item workflow ran once over the whole catalog when the version was built; its output
(the catalog's transformed features) is stored in the ranking model as buffers, so a
candidate's features are a gather inside TorchScript rather than a stage of their own: one
Python-backend hop less per request, and the same model.pt runs in the `pytorch_libtorch`
backend of a production image (serving.ranking_backend).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.contract import RANKING_MODEL_FILE, Catalog


class CatalogRanking(nn.Module):
    """The trained scorer with the catalog's item features inside.

    B users, C candidates each, N catalog items; U/Uc user categorical/continuous widths,
    I/Ic item categorical/continuous widths. Input names are the Triton tensors'.
    """

    def __init__(self, scorer: nn.Module, catalog: Catalog) -> None:
        super().__init__()
        self.scorer = scorer
        self.register_buffer("item_categorical", torch.from_numpy(catalog.categorical))
        self.register_buffer("item_continuous", torch.from_numpy(catalog.continuous))

    def forward(
        self,
        user_categorical: torch.Tensor,  # [B, U] int64
        user_continuous: torch.Tensor,  # [B, Uc] float32
        candidate_rows: torch.Tensor,  # [B, C] int64 catalog rows; -1 = no candidate
    ) -> torch.Tensor:  # [B, C] float32 click probabilities
        # Unfilled slots (NO_CANDIDATE) get row 0's features: ranked, then dropped by reorder.
        rows = candidate_rows.clamp(min=0)
        return self.scorer(
            user_categorical,
            user_continuous,
            self.item_categorical[rows],  # [B, C, I]
            self.item_continuous[rows],  # [B, C, Ic]
        )


def export_catalog_ranking(scorer_file: Path, catalog_file: Path, destination: Path) -> None:
    """Script the trained scorer (training's 4-input RankingScorer, TorchScript) together
    with the catalog into the ranking stage's model.pt."""
    scorer = torch.jit.load(str(scorer_file), map_location="cpu")
    module = CatalogRanking(scorer, Catalog.load(catalog_file)).eval()
    torch.jit.save(torch.jit.script(module), str(destination))


class RankingStage:
    """DLRM click probability for each (user, candidate row) pair."""

    def __init__(self, version_dir: Path) -> None:
        self.scorer = torch.jit.load(str(version_dir / RANKING_MODEL_FILE), map_location="cpu")
        self.catalog_size = int(self.scorer.item_categorical.shape[0])

    def __call__(
        self, user_cat: np.ndarray, user_cont: np.ndarray, candidate_rows: np.ndarray
    ) -> np.ndarray:
        with torch.inference_mode():
            scores = self.scorer(
                torch.from_numpy(user_cat),
                torch.from_numpy(user_cont),
                torch.from_numpy(candidate_rows),
            )
        return scores.numpy().astype(np.float32)
