"""Typed client for the `recommender` ensemble, over gRPC or HTTP (tritonclient).

Raw values in (user id, optional raw user features, exclusions), raw item ids out.

Failures are classified into one status vocabulary for both protocols (gRPC status names;
HTTP codes and socket errors are mapped onto them) and raised as `RecommenderClientError`
subclasses. Only UNAVAILABLE is retried, with capped exponential backoff and jitter: the
request never reached a model (connection refused or reset, server stopping or still
loading, or refused by a full queue: gRPC UNAVAILABLE, HTTP 503 or 429), and a
recommendation is a read, so sending it again cannot change anything.
Timeouts are not retried: the server may still be working on the first attempt, and
retrying would add load exactly when the server is slow. See docs/errors.md.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ENSEMBLE = "recommender"
Protocol = Literal["grpc", "http"]
# Inputs of the contract itself; every other input of the ensemble is a user feature.
CONTRACT_INPUTS = frozenset(
    {"user_id", "top_k", "exclude_item_ids", "history_item_ids", "temperature", "filter_seen"}
)
NUMPY_TYPES: dict[str, type] = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32,
                                "BYTES": np.object_}  # fmt: skip
T = TypeVar("T")
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1  # what tritonclient sets when given no channel args

# HTTP status -> the gRPC status name Triton uses for the same error.
HTTP_STATUS_CODES = {
    "400": "INVALID_ARGUMENT",
    "403": "PERMISSION_DENIED",
    "404": "NOT_FOUND",
    "409": "ALREADY_EXISTS",
    # Too Many Requests (an ingress or proxy shedding load in front of Triton): retried with
    # backoff like Triton's own 503.
    "429": "UNAVAILABLE",
    "499": "CANCELLED",
    "500": "INTERNAL",
    "501": "UNIMPLEMENTED",
    "503": "UNAVAILABLE",
}
# What Triton's queue policy answers under overload (UNAVAILABLE / 503): the server is up and
# answering, so the connection is kept; a new one would only add a handshake to its load.
OVERLOAD_MARKERS = ("Exceeds maximum queue size", "Request timeout expired")
# Triton answers NOT_FOUND "... has no available versions" while a known model is loading
# or unloading (e.g. during a server restart's shutdown): it is unavailable, not unknown.
NO_VERSIONS_MARKER = "has no available versions"
# gRPC's default reconnect backoff grows to 120 s: after a server restart the channel could
# sit in TRANSIENT_FAILURE long after the server is back. Cap it at one second.
GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class RecommenderClientError(RuntimeError):
    """The server refused or failed a request.

    `status` is the protocol's raw status (e.g. "StatusCode.INVALID_ARGUMENT" or "400"),
    `code` the protocol-independent name (INVALID_ARGUMENT, UNAVAILABLE, INTERNAL, ...),
    `attempts` how many times the request was sent.
    """

    def __init__(
        self, message: str, status: str | None = None, code: str = "UNKNOWN", attempts: int = 1
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.attempts = status, code, attempts


class InvalidRequestError(RecommenderClientError):
    """INVALID_ARGUMENT / HTTP 400: the request itself is wrong; sending it again won't help."""


class ServerUnavailableError(RecommenderClientError):
    """UNAVAILABLE after every retry: no server answered, or it was stopping or loading."""


class RequestTimeoutError(RecommenderClientError):
    """No answer within the per-attempt timeout (DEADLINE_EXCEEDED); not retried."""


class ServerFailedError(RecommenderClientError):
    """INTERNAL or another server-side failure (e.g. a dead Python-backend stub)."""


ERROR_CLASSES: dict[str, type[RecommenderClientError]] = {
    "INVALID_ARGUMENT": InvalidRequestError,
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": RequestTimeoutError,
    "INTERNAL": ServerFailedError,
}


@dataclass(frozen=True)
class Failure:
    code: str
    status: str | None
    message: str
    reconnect: bool  # open a fresh connection before retrying

    @property
    def retryable(self) -> bool:
        return self.code == "UNAVAILABLE"


def classify(exc: BaseException) -> Failure | None:
    """Map a tritonclient or socket exception onto a status name; None if not a call error."""
    if isinstance(exc, InferenceServerException):
        status = exc.status()
        message = exc.message() or str(exc)
        raw = (status or "").removeprefix("StatusCode.")
        code = HTTP_STATUS_CODES.get(raw, raw or "UNKNOWN")
        if code == "NOT_FOUND" and NO_VERSIONS_MARKER in message:
            code = "UNAVAILABLE"
        # UNAVAILABLE from a server going away: drop the connection. A kept-alive connection
        # to a server that is shutting down holds up its drain, and behind a load balancer a
        # new connection can reach another replica. An overload refusal keeps it.
        overloaded = any(marker in message for marker in OVERLOAD_MARKERS)
        return Failure(code, status, message, reconnect=code == "UNAVAILABLE" and not overloaded)
    if isinstance(exc, TimeoutError):  # before OSError: socket timeouts are OSErrors too
        return Failure("DEADLINE_EXCEEDED", None, f"timed out: {exc}", reconnect=True)
    if isinstance(exc, OSError | http.client.HTTPException):
        # Refused, reset, broken pipe, or geventhttpclient's HTTPConnectionClosed (an
        # HTTPException) while the server shuts down: nothing was answered.
        return Failure("UNAVAILABLE", None, f"{type(exc).__name__}: {exc}", reconnect=True)
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on UNAVAILABLE: `retries` more attempts, sleeping backoff_s * 2**n (capped at
    max_backoff_s, times a random factor in [0.5, 1] so clients do not retry in lockstep),
    and never past `deadline_s` after the first attempt if it is set."""

    retries: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    deadline_s: float | None = None

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * rng.uniform(0.5, 1.0)


FeatureValue = float | int | str | Sequence[str]


@dataclass(frozen=True)
class FeatureInput:
    """A user-feature input of the ensemble, as its metadata declares it."""

    name: str
    datatype: str  # FP32, INT64, BYTES
    is_list: bool  # shape [-1]: a list of tokens (multi-hot)


@dataclass(frozen=True)
class RecommendationRequest:
    user_id: int
    top_k: int = 10
    exclude_item_ids: Sequence[int] = ()
    features: dict[str, FeatureValue] = field(default_factory=dict)
    temperature: float | None = None
    # None: the server's default (items the user already consumed are not recommended).
    filter_seen: bool | None = None
    # In-session items, oldest first: pooled with the stored history, filtered like it.
    history_item_ids: Sequence[int] = ()


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    item_ids: list[int]
    scores: list[float]
    model_version: int


class RecommenderClient:
    """gRPC or HTTP client; thread-safe for gRPC, one instance per thread for HTTP."""

    def __init__(
        self,
        url: str,
        protocol: Protocol = "grpc",
        model_name: str = ENSEMBLE,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        retry_deadline_s: float | None = None,
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        self.url, self.protocol, self.model_name = url, protocol, model_name
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s, retry_deadline_s)
        self._module: Any = grpcclient if protocol == "grpc" else httpclient
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._client: Any = self._connect()
        self._features: dict[str, FeatureInput] | None = None

    @property
    def retries(self) -> int:
        return self.retry.retries

    def _connect(self) -> Any:
        if self.protocol == "grpc":
            return grpcclient.InferenceServerClient(self.url, channel_args=GRPC_CHANNEL_ARGS)
        return httpclient.InferenceServerClient(
            self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

    def _reconnect(self, failed: Any) -> None:
        # Replace the connection once, however many threads saw it fail. The old gRPC client
        # is dropped rather than closed: calls in flight on it keep their channel alive.
        with self._lock:
            if self._client is failed:
                if self.protocol == "http":
                    failed.close()
                self._client = self._connect()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout_kwargs(self) -> dict[str, float]:
        # gRPC takes a deadline per call; the HTTP client's timeouts are set on connect.
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def is_ready(self) -> bool:
        """Whether the ensemble is loaded and ready; False on any error, never raises."""
        try:
            return bool(self._client.is_model_ready(self.model_name, **self._timeout_kwargs()))
        except Exception as exc:
            if classify(exc) is None:
                raise
            return False

    def model_versions(self) -> dict[str, int]:
        """The composing models' versions the ensemble is pinned to, from its config."""
        config = self._call(
            "model config",
            lambda client: client.get_model_config(self.model_name, **self._timeout_kwargs()),
        )
        if self.protocol == "grpc":
            steps = [
                (s.model_name, s.model_version) for s in config.config.ensemble_scheduling.step
            ]
        else:
            steps = [
                (s["model_name"], s["model_version"]) for s in config["ensemble_scheduling"]["step"]
            ]
        return {name: int(version) for name, version in steps}

    def feature_inputs(self) -> dict[str, FeatureInput]:
        """The user features this server's ensemble accepts (from its metadata, cached)."""
        if self._features is None:
            metadata = self._call(
                "model metadata",
                lambda client: client.get_model_metadata(self.model_name, **self._timeout_kwargs()),
            )
            inputs = (
                [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
                if self.protocol == "grpc"
                else [(t["name"], t["datatype"], list(t["shape"])) for t in metadata["inputs"]]
            )
            self._features = {
                name: FeatureInput(name, datatype, shape[-1] == -1)
                for name, datatype, shape in inputs
                if name not in CONTRACT_INPUTS
            }
        return self._features

    def recommend(
        self,
        user_id: int,
        top_k: int = 10,
        exclude_item_ids: Sequence[int] = (),
        features: dict[str, FeatureValue] | None = None,
        temperature: float | None = None,
        filter_seen: bool | None = None,
        history_item_ids: Sequence[int] = (),
    ) -> Recommendation:
        request = RecommendationRequest(
            user_id, top_k, exclude_item_ids, features or {}, temperature, filter_seen,
            history_item_ids,
        )  # fmt: skip
        return self.recommend_batch([request])[0]

    def recommend_batch(self, requests: Sequence[RecommendationRequest]) -> list[Recommendation]:
        """Send several users in one request (one row each)."""
        if not requests:
            raise ValueError("recommend_batch needs at least one request")
        inputs = self._build_inputs(requests)
        result = self._call(
            "request",
            lambda client: client.infer(
                self.model_name,
                inputs,
                # The same deadline for the server's queues (microseconds): a request still
                # queued when its client gives up is refused there, not computed.
                timeout=int(self.timeout_s * 1_000_000),
                **self._timeout_kwargs(),
            ),
        )
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
        for name in ("exclude_item_ids", "history_item_ids"):
            lists = [list(getattr(r, name)) for r in requests]
            if any(lists):
                # Ragged lists travel as one [n, longest] tensor padded with -1.
                padded = np.full((n, max(len(ids) for ids in lists)), -1, dtype=np.int64)
                for i, ids in enumerate(lists):
                    padded[i, : len(ids)] = ids
                inputs.append(self._input(name, padded, "INT64"))
        temperatures = [r.temperature for r in requests]
        if any(t is not None for t in temperatures):
            if any(t is None for t in temperatures):
                raise ValueError("temperature must be given for every request of a batch or none")
            inputs.append(
                self._input(
                    "temperature", np.array([[t] for t in temperatures], np.float32), "FP32"
                )
            )
        flags = [r.filter_seen for r in requests]
        if any(flag is not None for flag in flags):
            # One value per row: unset rows take the server's default, True.
            column = [[True if flag is None else flag] for flag in flags]
            inputs.append(self._input("filter_seen", np.array(column, dtype=bool), "BOOL"))
        names = {name for r in requests for name in r.features}
        if names:
            known = self.feature_inputs()
            unknown = names - set(known)
            if unknown:
                raise ValueError(
                    f"unknown user feature(s) {sorted(unknown)}; this server takes {sorted(known)}"
                )
        for name in sorted(names):
            if any(name not in r.features for r in requests):
                raise ValueError(
                    f"feature {name!r} must be given for every request of a batch or none"
                )
            spec = self.feature_inputs()[name]
            values = [r.features[name] for r in requests]
            inputs.append(self._input(name, _feature_array(spec, values), spec.datatype))
        return inputs

    def _call(self, what: str, send: Callable[[Any], T]) -> T:
        """`send(client)`, retried on UNAVAILABLE per the retry policy."""
        started = time.monotonic()
        attempt = 0
        while True:
            client = self._client
            try:
                return send(client)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                delay = self.retry.delay(attempt, self._rng)
                out_of_time = (
                    self.retry.deadline_s is not None
                    and time.monotonic() + delay - started > self.retry.deadline_s
                )
                if not failure.retryable or attempt >= self.retry.retries or out_of_time:
                    raise self._error(what, failure, attempt + 1) from exc
                if failure.reconnect:
                    self._reconnect(client)
                time.sleep(delay)
                attempt += 1

    def _error(self, what: str, failure: Failure, attempts: int) -> RecommenderClientError:
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        message = (
            f"{self.protocol} {what} to {self.url} model {self.model_name!r} failed{tried} "
            f"[{failure.code}]: {failure.message}"
        )
        cls = ERROR_CLASSES.get(failure.code, RecommenderClientError)
        return cls(message, status=failure.status, code=failure.code, attempts=attempts)


def _feature_array(spec: FeatureInput, values: list[FeatureValue]) -> np.ndarray:
    """[B, 1] values (or [B, T] token lists padded with empty strings) of one feature."""
    if spec.is_list:
        rows = [[v] if isinstance(v, str) else list(v) for v in values]  # type: ignore[arg-type]
        width = max(1, *(len(row) for row in rows))
        array = np.full((len(rows), width), b"", dtype=np.object_)
        for i, row in enumerate(rows):
            array[i, : len(row)] = [str(token).encode() for token in row]
        return array
    if spec.datatype == "BYTES":
        return np.array([[str(v).encode()] for v in values], dtype=np.object_)
    try:
        return np.array([[v] for v in values], dtype=NUMPY_TYPES[spec.datatype])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature {spec.name!r} takes {spec.datatype} values: {exc}") from exc
