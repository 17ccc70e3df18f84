"""Triton model `reorder`: sort by score, drop excluded items, optional sampling, top_k.

Outputs raw item ids (decoded from catalog rows), their scores, and this model set's
version, so every response says which version produced it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving import triton_io
from serving.stages import ReorderStage
from serving.triton_io import RequestError


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = triton_io.parameters(args)
        self.stage = ReorderStage(triton_io.version_dir(args), int(params["max_top_k"]))
        self.max_exclude = int(params["max_exclude"])
        self.version = np.int64(int(args["model_version"]))

    def _answer(self, request: Any) -> Any:
        rows = triton_io.required_input(request, "candidate_rows")
        scores = triton_io.required_input(request, "ranking_scores")
        top_k = triton_io.required_input(request, "top_k").reshape(-1)
        exclude = triton_io.optional_input(request, "exclude_item_ids")
        temperature = triton_io.optional_input(request, "temperature")
        batch = len(rows)
        if exclude is not None and exclude.shape[-1] > self.max_exclude:
            raise RequestError(
                f"input 'exclude_item_ids' has {exclude.shape[-1]} ids; at most "
                f"{self.max_exclude} are accepted"
            )
        results = []
        for i in range(batch):
            try:
                results.append(
                    self.stage(
                        rows[i],
                        scores[i],
                        int(top_k[i]),
                        None if exclude is None else exclude[i],
                        0.0 if temperature is None else float(temperature.reshape(-1)[i]),
                    )
                )
            except ValueError as exc:
                raise RequestError(str(exc)) from exc
        # A request may carry several users with different result lengths (after
        # exclusions): pad with id -1 and score NaN so the batch stays rectangular.
        width = max(len(r.item_ids) for r in results)
        item_ids = np.full((batch, width), -1, dtype=np.int64)
        out_scores = np.full((batch, width), np.nan, dtype=np.float32)
        for i, result in enumerate(results):
            item_ids[i, : len(result.item_ids)] = result.item_ids
            out_scores[i, : len(result.scores)] = result.scores
        return triton_io.response(
            triton_io.output("item_ids", item_ids),
            triton_io.output("scores", out_scores),
            triton_io.output("model_version", np.full((batch, 1), self.version)),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._answer(request))
            except RequestError as exc:
                responses.append(triton_io.error_response(str(exc)))
        return responses
