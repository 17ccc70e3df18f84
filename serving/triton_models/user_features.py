"""Triton model `user_features`: user id (+ optional raw features) -> user feature tensors.

Looks the user's raw features up in the table shipped with this version (the feature
store stand-in), lets the request override any of them, and applies the saved NVTabular
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
from serving import triton_io
from serving.stages import RAW_USER_FEATURES, UserFeatureStage
from serving.triton_io import RequestError

# Overrides outside these bounds are refused rather than fed to the models: a finite but
# absurd age (1e30) would normalise to a huge value and come back as meaningless scores,
# and a megabyte-long category string is a malformed request, not a category.
AGE_RANGE = (0.0, 150.0)
MAX_STRING_BYTES = 256


@dataclass(frozen=True)
class UserRequest:
    user_ids: np.ndarray  # [B] int64
    overrides: dict[str, np.ndarray]  # raw feature name -> [B] values


def _float_override(name: str, values: np.ndarray) -> np.ndarray:
    triton_io.check_finite(name, values)
    low, high = AGE_RANGE
    if np.any((values < low) | (values > high)):
        raise RequestError(f"input '{name}' must be between {low:g} and {high:g}")
    return values.astype(np.float32)


def _string_override(name: str, values: np.ndarray) -> np.ndarray:
    decoded = []
    for value in values:
        raw = value if isinstance(value, bytes) else str(value).encode()
        if len(raw) > MAX_STRING_BYTES:
            raise RequestError(
                f"input '{name}' is {len(raw)} bytes long; at most {MAX_STRING_BYTES} accepted"
            )
        try:
            decoded.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(f"input '{name}' is not valid UTF-8: {exc}") from exc
    return np.array(decoded, dtype=object)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.name = args["model_name"]
        self.stage = triton_io.load_stage(args, UserFeatureStage)
        self.metrics = LiveMetrics(pb_utils, self.name, args["model_version"])
        self.profile = load_profile(triton_io.version_dir(args))

    def _parse(self, request: Any) -> UserRequest:
        ids = triton_io.required_input(request, "user_id").reshape(-1).astype(np.int64)
        overrides = {}
        for name, dtype in RAW_USER_FEATURES.items():
            values = triton_io.optional_input(request, name)
            if values is None:
                continue
            if values.shape[0] != len(ids):
                raise RequestError(
                    f"input '{name}' has batch size {values.shape[0]}, user_id has {len(ids)}"
                )
            values = values.reshape(len(ids))
            overrides[name] = (
                _float_override(name, values)
                if dtype == "float32"
                else _string_override(name, values)
            )
        return UserRequest(ids, overrides)

    def _run(self, batch: list[UserRequest]) -> list[Any]:
        sizes = [len(item.user_ids) for item in batch]
        raw = self.stage.raw_rows(np.concatenate([item.user_ids for item in batch]))
        start = 0
        for size, item in zip(sizes, batch, strict=True):
            for name, values in item.overrides.items():
                raw.loc[start : start + size - 1, name] = values
            start += size
        categorical, continuous = self.stage.transform(raw)
        observe_user_features(self.metrics, self.profile, raw, categorical,
                              self.stage.spec.categorical)  # fmt: skip
        outputs = {
            "user_categorical": triton_io.split(categorical, sizes),
            "user_continuous": triton_io.split(continuous, sizes),
        }
        return triton_io.responses_from_outputs(outputs, len(batch))

    def execute(self, requests: list[Any]) -> list[Any]:
        return triton_io.answer_all(self.name, requests, self._parse, self._run)
