"""Triton model `reorder`: sort by score, drop excluded items, optional sampling, top_k.

Outputs raw item ids (decoded from catalog rows), their scores, and this model set's
version, so every response says which version produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from monitoring.live_metrics import LiveMetrics, load_profile, observe_results
from recsys.contract import NO_CANDIDATE
from serving import triton_io
from serving.stages import Recommendation, ReorderStage
from serving.triton_io import RequestError


@dataclass(frozen=True)
class ReorderRequest:
    rows: np.ndarray  # [B, C] catalog rows
    scores: np.ndarray  # [B, C]
    retrieval_scores: np.ndarray | None  # [B, C]
    top_k: np.ndarray  # [B]
    exclude: np.ndarray | None  # [B, E], negative = padding
    temperature: np.ndarray | None  # [B]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        params = triton_io.parameters(args)
        max_top_k = int(params["max_top_k"])
        weight = float(params["retrieval_weight"])
        self.stage = triton_io.load_stage(args, lambda d: ReorderStage(d, max_top_k, weight))
        self.max_exclude = int(params["max_exclude"])
        self.version = np.int64(int(args["model_version"]))
        self.metrics = LiveMetrics(pb_utils, self.name, args["model_version"])
        self.profile = load_profile(triton_io.version_dir(args))

    def _parse(self, request: Any) -> ReorderRequest:
        rows = triton_io.required_input(request, "candidate_rows")
        triton_io.check_index("candidate_rows", rows, len(self.stage.item_ids), NO_CANDIDATE)
        scores = triton_io.check_finite(
            "ranking_scores", triton_io.required_input(request, "ranking_scores")
        )
        exclude = triton_io.check_exclude(
            triton_io.optional_input(request, "exclude_item_ids"), self.max_exclude
        )
        temperature = triton_io.optional_input(request, "temperature")
        retrieval_scores = triton_io.optional_input(request, "retrieval_scores")
        if retrieval_scores is not None:
            # NaN marks the NO_CANDIDATE slots, which the stage drops.
            retrieval_scores = np.where(rows >= 0, retrieval_scores, 0.0)
            triton_io.check_finite("retrieval_scores", retrieval_scores)
        return ReorderRequest(
            rows,
            scores,
            retrieval_scores,
            triton_io.required_input(request, "top_k").reshape(-1),
            exclude,
            None if temperature is None else temperature.reshape(-1),
        )

    def _recommend(self, item: ReorderRequest, i: int) -> Recommendation:
        retrieval_scores = item.retrieval_scores
        try:
            return self.stage(
                item.rows[i],
                item.scores[i],
                int(item.top_k[i]),
                None if item.exclude is None else item.exclude[i],
                0.0 if item.temperature is None else float(item.temperature[i]),
                retrieval_scores=None if retrieval_scores is None else retrieval_scores[i],
            )
        except ValueError as exc:  # the stage's own checks: top_k range, temperature
            raise RequestError(str(exc)) from exc

    def _answer(self, item: ReorderRequest) -> Any:
        batch = len(item.rows)
        results = [self._recommend(item, i) for i in range(batch)]
        observe_results(
            self.metrics, self.profile, [r.scores for r in results],
            [self.stage.deciles_of(r.item_ids) for r in results],
            [int(k) for k in item.top_k],
        )  # fmt: skip
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
        return triton_io.answer_all(
            self.name, requests, self._parse, lambda batch: [self._answer(i) for i in batch]
        )

    def finalize(self) -> None:
        # The live counters are buffered and sent every monitoring.flush_interval_s: send
        # the rest before an unload or shutdown drops this version's metrics.
        self.metrics.close()
