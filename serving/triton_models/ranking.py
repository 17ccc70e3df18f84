"""Triton model `ranking`: the scripted DLRM (model.pt) run through the Python backend.

The same model.pt loads unchanged in the `pytorch_libtorch` backend of a production image
(serving.ranking_backend in config/default.yaml); this wrapper exists because the server
bundled here ships only the Python backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from serving import triton_io
from serving.stages import RankingStage

INPUTS = ("user_categorical", "user_continuous", "item_categorical", "item_continuous")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        torch.set_num_threads(int(triton_io.parameters(args)["torch_threads"]))
        self.stage = triton_io.load_stage(args, RankingStage)

    def _parse(self, request: Any) -> dict[str, np.ndarray]:
        arrays = {name: triton_io.required_input(request, name) for name in INPUTS}
        for name, array in arrays.items():
            if name.endswith("categorical"):
                triton_io.check_index(name, array)
            else:
                triton_io.check_finite(name, array)
        return arrays

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list[Any]:
        sizes = [len(item["user_categorical"]) for item in batch]
        scores = self.stage(*(np.concatenate([item[name] for item in batch]) for name in INPUTS))
        return triton_io.responses_from_outputs(
            {"ranking_scores": triton_io.split(scores, sizes)}, len(batch)
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)
