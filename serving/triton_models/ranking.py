"""Triton model `ranking`: the scripted DLRM (model.pt) run through the Python backend.

The same model.pt loads unchanged in the `pytorch_libtorch` backend of a production image
(serving.ranking_backend in config/default.yaml); this wrapper exists because the server
bundled here ships only the Python backend.
"""

from __future__ import annotations

from typing import Any

import torch

from serving import triton_io
from serving.stages import RankingStage


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        torch.set_num_threads(int(triton_io.parameters(args)["torch_threads"]))
        self.stage = RankingStage(triton_io.version_dir(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        user_cat, sizes = triton_io.gather(requests, "user_categorical")
        user_cont, _ = triton_io.gather(requests, "user_continuous")
        item_cat, _ = triton_io.gather(requests, "item_categorical")
        item_cont, _ = triton_io.gather(requests, "item_continuous")
        scores = self.stage(user_cat, user_cont, item_cat, item_cont)
        return triton_io.responses_from_outputs(
            {"ranking_scores": triton_io.split(scores, sizes)}, len(requests)
        )
