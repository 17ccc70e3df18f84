"""Triton model `item_features`: candidate catalog rows -> transformed item features.

The item workflow ran once over the whole catalog when this version was built, so serving
is an array lookup rather than a workflow call per request.
"""

from __future__ import annotations

from typing import Any

from serving import triton_io
from serving.stages import ItemFeatureStage


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.stage = ItemFeatureStage(triton_io.version_dir(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        rows, sizes = triton_io.gather(requests, "candidate_rows")
        categorical, continuous = self.stage(rows)
        outputs = {
            "item_categorical": triton_io.split(categorical, sizes),
            "item_continuous": triton_io.split(continuous, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(requests))
