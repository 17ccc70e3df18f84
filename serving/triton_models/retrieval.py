"""Triton model `retrieval`: user features -> query tower -> top candidates by inner product."""

from __future__ import annotations

from typing import Any

import torch

from serving import triton_io
from serving.stages import RetrievalStage


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = triton_io.parameters(args)
        torch.set_num_threads(int(params["torch_threads"]))
        self.stage = RetrievalStage(triton_io.version_dir(args), int(params["num_candidates"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        user_cat, sizes = triton_io.gather(requests, "user_categorical")
        user_cont, _ = triton_io.gather(requests, "user_continuous")
        rows, scores = self.stage(user_cat, user_cont)
        outputs = {
            "candidate_rows": triton_io.split(rows, sizes),
            "retrieval_scores": triton_io.split(scores, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(requests))
