"""Triton model `retrieval`: user features -> query tower -> top candidates by inner product."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from serving import triton_io
from serving.stages import RetrievalStage

UserFeatures = tuple[np.ndarray, np.ndarray]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        params = triton_io.parameters(args)
        torch.set_num_threads(int(params["torch_threads"]))
        num_candidates = int(params["num_candidates"])
        self.stage = triton_io.load_stage(
            args, lambda directory: RetrievalStage(directory, num_candidates)
        )

    def _parse(self, request: Any) -> UserFeatures:
        # Only the ensemble's user_features step feeds this model, but it can be called
        # directly: non-finite values would come back as garbage neighbours, not errors.
        user_cat = triton_io.required_input(request, "user_categorical")
        user_cont = triton_io.required_input(request, "user_continuous")
        triton_io.check_index("user_categorical", user_cat)
        triton_io.check_finite("user_continuous", user_cont)
        return user_cat, user_cont

    def _run(self, batch: list[UserFeatures]) -> list[Any]:
        sizes = [len(cat) for cat, _ in batch]
        rows, scores = self.stage(
            np.concatenate([cat for cat, _ in batch]), np.concatenate([cont for _, cont in batch])
        )
        outputs = {
            "candidate_rows": triton_io.split(rows, sizes),
            "retrieval_scores": triton_io.split(scores, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(batch))

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)
