"""Triton model `item_features`: candidate catalog rows -> transformed item features.

The item workflow ran once over the whole catalog when this version was built, so serving
is an array lookup rather than a workflow call per request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.contract import NO_CANDIDATE
from serving import triton_io
from serving.stages import ItemFeatureStage


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.stage = triton_io.load_stage(args, ItemFeatureStage)
        self.catalog_size = len(self.stage.catalog.categorical)

    def _parse(self, request: Any) -> np.ndarray:
        # Rows index the catalog: a negative row would silently wrap to another item.
        rows = triton_io.required_input(request, "candidate_rows")
        return triton_io.check_index("candidate_rows", rows, self.catalog_size, NO_CANDIDATE)

    def _run(self, batch: list[np.ndarray]) -> list[Any]:
        sizes = [len(rows) for rows in batch]
        categorical, continuous = self.stage(np.concatenate(batch))
        outputs = {
            "item_categorical": triton_io.split(categorical, sizes),
            "item_continuous": triton_io.split(continuous, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(batch))

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)
