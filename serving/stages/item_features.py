"""Stage 3, item features: catalog rows -> transformed item features (an array lookup; the
item workflow ran once over the whole catalog when the version was built)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.contract import CATALOG_FILE, Catalog


class ItemFeatureStage:
    """Catalog rows -> transformed item features (precomputed with the item workflow)."""

    def __init__(self, version_dir: Path) -> None:
        self.catalog = Catalog.load(version_dir / CATALOG_FILE)

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Unfilled candidate slots (NO_CANDIDATE) get row 0's features: ranked, then dropped
        # by the reorder stage.
        rows = np.maximum(rows, 0)
        return self.catalog.categorical[rows], self.catalog.continuous[rows]
