"""Triton model `retrieval`: user features -> query tower -> top candidates by inner product,
without the user's consumed items (unless `filter_seen` is False) and excluded ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from serving import triton_io
from serving.stages import RetrievalStage


@dataclass(frozen=True)
class RetrievalRequest:
    user_cat: np.ndarray  # [B, W]
    user_cont: np.ndarray  # [B, n]
    user_ids: np.ndarray | None  # [B]
    exclude: list[np.ndarray] | None  # B arrays of raw ids, negative = padding
    filter_seen: np.ndarray | None  # [B] bool
    session: list[np.ndarray] | None  # B arrays of raw ids, negative = padding


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        params = triton_io.parameters(args)
        torch.set_num_threads(int(params["torch_threads"]))
        num_candidates = int(params["num_candidates"])
        self.max_exclude = int(params["max_exclude"])
        self.max_history_items = int(params["max_history_items"])
        self.stage = triton_io.load_stage(
            args, lambda directory: RetrievalStage(directory, num_candidates)
        )

    def _parse(self, request: Any) -> RetrievalRequest:
        # The ensemble's user_features step feeds the features, but the model can be called
        # directly: non-finite values would come back as garbage neighbours, not errors.
        user_cat = triton_io.required_input(request, "user_categorical")
        user_cont = triton_io.required_input(request, "user_continuous")
        triton_io.check_index("user_categorical", user_cat)
        triton_io.check_finite("user_continuous", user_cont)
        rows = len(user_cat)
        user_ids = triton_io.optional_input(request, "user_id")
        # Checked here, before any search: an unbounded list would cost every stage.
        exclude = triton_io.check_exclude(
            triton_io.optional_input(request, "exclude_item_ids"), self.max_exclude
        )
        filter_seen = triton_io.optional_input(request, "filter_seen")
        session = triton_io.check_exclude(
            triton_io.optional_input(request, "history_item_ids"), self.max_history_items,
            "history_item_ids",
        )  # fmt: skip
        return RetrievalRequest(
            user_cat,
            user_cont,
            None if user_ids is None else user_ids.reshape(rows).astype(np.int64),
            None if exclude is None else list(exclude.reshape(rows, -1)),
            None if filter_seen is None else filter_seen.reshape(rows).astype(bool),
            None if session is None else list(session.reshape(rows, -1)),
        )

    def _run(self, batch: list[RetrievalRequest]) -> list[Any]:
        sizes = [len(item.user_cat) for item in batch]
        user_ids = exclude = filter_seen = session = None
        if all(item.user_ids is not None for item in batch):
            user_ids = np.concatenate([item.user_ids for item in batch])  # type: ignore[misc]
            filter_seen = np.concatenate([
                np.ones(size, dtype=bool) if item.filter_seen is None else item.filter_seen
                for size, item in zip(sizes, batch, strict=True)
            ])  # fmt: skip
        if any(item.exclude is not None for item in batch):
            exclude = [
                ids
                for size, item in zip(sizes, batch, strict=True)
                for ids in (item.exclude or [np.empty(0, np.int64)] * size)
            ]
        if any(item.session is not None for item in batch):
            session = [
                ids
                for size, item in zip(sizes, batch, strict=True)
                for ids in (item.session or [np.empty(0, np.int64)] * size)
            ]
        rows, scores = self.stage(
            np.concatenate([item.user_cat for item in batch]),
            np.concatenate([item.user_cont for item in batch]),
            user_ids, exclude, filter_seen, session,
        )  # fmt: skip
        outputs = {
            "candidate_rows": triton_io.split(rows, sizes),
            "retrieval_scores": triton_io.split(scores, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(batch))

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)
