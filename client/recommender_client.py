"""Typed client for the `recommender` ensemble, over gRPC or HTTP (tritonclient).

Raw values in (user id, optional raw user features, exclusions), raw item ids out. Calls
that fail with UNAVAILABLE (server restarting, overloaded) are retried with exponential
backoff; everything else raises `RecommenderClientError` naming what went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ENSEMBLE = "recommender"
Protocol = Literal["grpc", "http"]
RAW_FLOAT_FEATURES = ("age",)
RAW_STRING_FEATURES = ("country", "device", "zipcode")
# Status strings that mean "try again": the server is not (yet) there or is shedding load.
RETRYABLE = (
    "UNAVAILABLE",
    "StatusCode.UNAVAILABLE",
    "Connection refused",
    "connection refused",
    "Server not ready",
    "503",
    "Broken pipe",
    "Connection reset",
    "RemoteDisconnected",
)


class RecommenderClientError(RuntimeError):
    """The server refused or failed a request; `status` carries Triton's status if any."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecommendationRequest:
    user_id: int
    top_k: int = 10
    exclude_item_ids: Sequence[int] = ()
    features: dict[str, float | str] = field(default_factory=dict)
    temperature: float | None = None


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    item_ids: list[int]
    scores: list[float]
    model_version: int


class RecommenderClient:
    def __init__(
        self,
        url: str,
        protocol: Protocol = "grpc",
        model_name: str = ENSEMBLE,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self.url, self.protocol, self.model_name = url, protocol, model_name
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._module: Any = grpcclient if protocol == "grpc" else httpclient
        if protocol == "grpc":
            self._client: Any = grpcclient.InferenceServerClient(url)
        else:
            self._client = httpclient.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.model_name))
        except (InferenceServerException, OSError):
            return False

    def model_versions(self) -> dict[str, int]:
        """The composing models' versions the ensemble is pinned to, from its config."""
        config = self._client.get_model_config(self.model_name)
        if self.protocol == "grpc":
            steps = [
                (s.model_name, s.model_version) for s in config.config.ensemble_scheduling.step
            ]
        else:
            steps = [
                (s["model_name"], s["model_version"]) for s in config["ensemble_scheduling"]["step"]
            ]
        return {name: int(version) for name, version in steps}

    def recommend(
        self,
        user_id: int,
        top_k: int = 10,
        exclude_item_ids: Sequence[int] = (),
        features: dict[str, float | str] | None = None,
        temperature: float | None = None,
    ) -> Recommendation:
        request = RecommendationRequest(
            user_id, top_k, exclude_item_ids, features or {}, temperature
        )
        return self.recommend_batch([request])[0]

    def recommend_batch(self, requests: Sequence[RecommendationRequest]) -> list[Recommendation]:
        """Send several users in one request (one row each)."""
        if not requests:
            raise ValueError("recommend_batch needs at least one request")
        inputs = self._build_inputs(requests)
        result = self._infer_with_retries(inputs)
        item_ids = result.as_numpy("item_ids")
        scores = result.as_numpy("scores")
        versions = result.as_numpy("model_version").reshape(-1)
        out = []
        for i, request in enumerate(requests):
            keep = item_ids[i] >= 0  # rows are padded with -1 to the longest answer
            out.append(
                Recommendation(
                    int(request.user_id),
                    item_ids[i][keep].tolist(),
                    scores[i][keep].astype(float).tolist(),
                    int(versions[i]),
                )
            )
        return out

    def _input(self, name: str, array: np.ndarray, datatype: str) -> Any:
        tensor = self._module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def _build_inputs(self, requests: Sequence[RecommendationRequest]) -> list[Any]:
        n = len(requests)
        inputs = [
            self._input("user_id", np.array([[r.user_id] for r in requests], np.int64), "INT64"),
            self._input("top_k", np.array([[r.top_k] for r in requests], np.int32), "INT32"),
        ]
        if any(r.exclude_item_ids for r in requests):
            width = max(len(r.exclude_item_ids) for r in requests)
            exclude = np.full((n, width), -1, dtype=np.int64)
            for i, r in enumerate(requests):
                exclude[i, : len(r.exclude_item_ids)] = list(r.exclude_item_ids)
            inputs.append(self._input("exclude_item_ids", exclude, "INT64"))
        temperatures = [r.temperature for r in requests]
        if any(t is not None for t in temperatures):
            if any(t is None for t in temperatures):
                raise ValueError("temperature must be given for every request of a batch or none")
            inputs.append(
                self._input(
                    "temperature", np.array([[t] for t in temperatures], np.float32), "FP32"
                )
            )
        names = {name for r in requests for name in r.features}
        unknown = names - set(RAW_FLOAT_FEATURES) - set(RAW_STRING_FEATURES)
        if unknown:
            raise ValueError(
                f"unknown user feature(s) {sorted(unknown)}; known: "
                f"{[*RAW_FLOAT_FEATURES, *RAW_STRING_FEATURES]}"
            )
        for name in sorted(names):
            if any(name not in r.features for r in requests):
                raise ValueError(
                    f"feature {name!r} must be given for every request of a batch or none"
                )
            if name in RAW_FLOAT_FEATURES:
                array = np.array([[float(r.features[name])] for r in requests], np.float32)
                inputs.append(self._input(name, array, "FP32"))
            else:
                array = np.array(
                    [[str(r.features[name]).encode()] for r in requests], dtype=np.object_
                )
                inputs.append(self._input(name, array, "BYTES"))
        return inputs

    def _infer_with_retries(self, inputs: list[Any]) -> Any:
        attempt = 0
        while True:
            try:
                if self.protocol == "grpc":
                    return self._client.infer(
                        self.model_name, inputs, client_timeout=self.timeout_s
                    )
                return self._client.infer(self.model_name, inputs)
            except (InferenceServerException, OSError, ConnectionError) as exc:
                message = str(exc)
                status = exc.status() if isinstance(exc, InferenceServerException) else None
                retryable = any(marker in f"{status} {message}" for marker in RETRYABLE)
                if not retryable or attempt >= self.retries:
                    raise RecommenderClientError(
                        f"{self.protocol} request to {self.url} model {self.model_name!r} failed: "
                        f"{message}",
                        status=status,
                    ) from exc
                time.sleep(self.backoff_s * 2**attempt)
                attempt += 1
