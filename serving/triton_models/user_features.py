"""Triton model `user_features`: user id (+ optional raw features) -> user feature tensors.

Looks the user's raw features up in the table shipped with this version (the feature
store stand-in), lets the request override the features the schema marks overridable
(typed and bounded by the schema, serving/overrides.py), and applies the saved NVTabular
user workflow unchanged. Unknown users (any id not in the table, negative ones included)
are served: their ids map to the workflow's out-of-vocabulary index and missing features
to its null index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from monitoring.live_metrics import LiveMetrics, load_profile, observe_user_features
from recsys.contract import REQUEST_USER_ID
from serving import triton_io
from serving.overrides import OverrideError, parse_override
from serving.stages import UserFeatureStage
from serving.triton_io import RequestError


@dataclass(frozen=True)
class UserRequest:
    user_ids: np.ndarray  # [B] int64
    overrides: dict[str, np.ndarray]  # raw feature name -> [B] values


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.stage = triton_io.load_stage(args, UserFeatureStage)
        self.overridable = dict(self.stage.schema.user_overrides())
        self.id_name = REQUEST_USER_ID
        self.metrics = LiveMetrics(pb_utils, self.name, args["model_version"])
        self.profile = load_profile(triton_io.version_dir(args))
        params = triton_io.parameters(args)
        # The ensemble hands this first stage the inputs later stages consume, so a bad
        # request is refused here, before retrieval and ranking spend anything on it.
        self.max_top_k = min(int(params["max_top_k"]), int(params["num_candidates"]))
        self.max_exclude = int(params["max_exclude"])
        self.max_history_items = int(params["max_history_items"])

    def _check_request(self, request: Any) -> None:
        """The inputs only later stages use; each of them keeps its own guard too."""
        triton_io.check_top_k(triton_io.optional_input(request, "top_k"), self.max_top_k)
        triton_io.check_exclude(
            triton_io.optional_input(request, "exclude_item_ids"), self.max_exclude
        )
        triton_io.check_exclude(
            triton_io.optional_input(request, "history_item_ids"), self.max_history_items,
            "history_item_ids",
        )  # fmt: skip
        triton_io.check_temperature(triton_io.optional_input(request, "temperature"))

    def _parse(self, request: Any) -> UserRequest:
        self._check_request(request)
        ids = triton_io.required_input(request, self.id_name).reshape(-1).astype(np.int64)
        overrides = {}
        for name, feature in self.overridable.items():
            values = triton_io.optional_input(request, name)
            if values is None:
                continue
            if values.shape[0] != len(ids):
                raise RequestError(
                    f"input '{name}' has batch size {values.shape[0]}, {self.id_name} has "
                    f"{len(ids)}"
                )
            try:
                overrides[name] = parse_override(name, feature, values)
            except OverrideError as exc:
                raise RequestError(str(exc)) from exc
        return UserRequest(ids, overrides)

    def _run(self, batch: list[UserRequest]) -> list[Any]:
        sizes = [len(item.user_ids) for item in batch]
        raw = self.stage.raw_columns(np.concatenate([item.user_ids for item in batch]))
        start = 0
        for size, item in zip(sizes, batch, strict=True):
            for name, values in item.overrides.items():
                raw[name][start : start + size] = values
            start += size
        categorical, continuous = self.stage.transform(raw)
        observe_user_features(self.metrics, self.profile, raw, categorical, self.stage.spec,
                              self.stage.schema)  # fmt: skip
        outputs = {
            "user_categorical": triton_io.split(categorical, sizes),
            "user_continuous": triton_io.split(continuous, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(batch))

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)

    def finalize(self) -> None:
        # The live counters are buffered and sent every monitoring.flush_interval_s: send
        # the rest before an unload or shutdown drops this version's metrics.
        self.metrics.close()
