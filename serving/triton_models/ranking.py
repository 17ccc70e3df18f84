"""Triton model `ranking`: the scripted DLRM with the catalog's item features inside
(model.pt) run through the Python backend.

The same model.pt loads unchanged in the `pytorch_libtorch` backend of a production image
(serving.ranking_backend in config/default.yaml); this wrapper exists because the server
bundled here ships only the Python backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recsys.contract import NO_CANDIDATE
from serving import triton_io
from serving.stages import RankingStage

INPUTS = ("user_categorical", "user_continuous", "candidate_rows")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        torch.set_num_threads(int(triton_io.parameters(args)["torch_threads"]))
        self.stage = triton_io.load_stage(args, RankingStage)

    def _parse(self, request: Any) -> dict[str, np.ndarray]:
        arrays = {name: triton_io.required_input(request, name) for name in INPUTS}
        triton_io.check_index("user_categorical", arrays["user_categorical"])
        triton_io.check_finite("user_continuous", arrays["user_continuous"])
        # Rows index the catalog: a negative row would silently wrap to another item.
        triton_io.check_index(
            "candidate_rows", arrays["candidate_rows"], self.stage.catalog_size, NO_CANDIDATE
        )
        return arrays

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list[Any]:
        sizes = [len(item["user_categorical"]) for item in batch]
        scores = self.stage(*(np.concatenate([item[name] for item in batch]) for name in INPUTS))
        return triton_io.responses_from_outputs(
            {"ranking_scores": triton_io.split(scores, sizes)}, len(batch)
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)
