"""Triton model `user_features`: user id (+ optional raw features) -> user feature tensors.

Looks the user's raw features up in the table shipped with this version (the feature
store stand-in), lets the request override any of them, and applies the saved NVTabular
user workflow unchanged. Unknown users are served: their ids map to the workflow's
out-of-vocabulary index and missing features to its null index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving import triton_io
from serving.stages import RAW_USER_FEATURES, UserFeatureStage
from serving.triton_io import RequestError


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.stage = UserFeatureStage(triton_io.version_dir(args))

    def _overrides(self, request: Any, batch: int) -> dict[str, np.ndarray]:
        overrides = {}
        for name, dtype in RAW_USER_FEATURES.items():
            values = triton_io.optional_input(request, name)
            if values is None:
                continue
            if values.shape[0] != batch:
                raise RequestError(
                    f"input '{name}' has batch size {values.shape[0]}, user_id has {batch}"
                )
            values = values.reshape(batch)
            if dtype == "float32":
                if not np.all(np.isfinite(values)):
                    raise RequestError(f"input '{name}' must be finite (got NaN or inf)")
                overrides[name] = values.astype(np.float32)
            else:
                try:
                    overrides[name] = np.array(
                        [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values],
                        dtype=object,
                    )
                except UnicodeDecodeError as exc:
                    raise RequestError(f"input '{name}' is not valid UTF-8: {exc}") from exc
        return overrides

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        valid, user_ids, overrides = [], [], []
        for i, request in enumerate(requests):
            try:
                ids = triton_io.required_input(request, "user_id").reshape(-1).astype(np.int64)
                overrides.append(self._overrides(request, len(ids)))
            except RequestError as exc:
                responses[i] = triton_io.error_response(str(exc))
                continue
            valid.append(i)
            user_ids.append(ids)
        if valid:
            sizes = [len(ids) for ids in user_ids]
            raw = self.stage.raw_rows(np.concatenate(user_ids))
            start = 0
            for size, request_overrides in zip(sizes, overrides, strict=True):
                for name, values in request_overrides.items():
                    raw.loc[start : start + size - 1, name] = values
                start += size
            categorical, continuous = self.stage.transform(raw)
            outputs = {
                "user_categorical": triton_io.split(categorical, sizes),
                "user_continuous": triton_io.split(continuous, sizes),
            }
            for slot, response in zip(
                valid, triton_io.responses_from_outputs(outputs, len(valid)), strict=True
            ):
                responses[slot] = response
        return responses
