"""Helpers shared by the Python-backend models: validation, batching and per-request errors.

Only imported inside Triton's Python backend stub, where `triton_python_backend_utils`
exists. Dynamic batching hands `execute` a list of requests; models validate each request
on its own, run the valid ones as one batch, and split the result back per request.

The rule every model follows (docs/errors.md): `execute` never raises. A request with bad
inputs gets INVALID_ARGUMENT naming the input; an unexpected exception gets INTERNAL for
the request that caused it only, and the other requests of the same dynamic batch are
still answered. An exception escaping `execute` would fail every request of the batch.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

T = TypeVar("T")
# Longest message text taken from an unexpected exception into a client-facing error; the
# full traceback goes to the server log only.
MAX_DETAIL_CHARS = 300


class RequestError(ValueError):
    """A problem with one request's inputs; answered as INVALID_ARGUMENT for that request."""


def version_dir(args: dict[str, str]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def parameters(args: dict[str, str]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def load_stage(args: dict[str, str], factory: Callable[[Path], T]) -> T:
    """Build a stage from this version's directory; a failure names model, version and path.

    Raising from `initialize` makes Triton mark the version UNAVAILABLE and keep serving the
    versions already loaded; the message lands in the server log and the load API's answer.
    """
    directory = version_dir(args)
    try:
        return factory(directory)
    except Exception as exc:
        message = (
            f"model '{args['model_name']}' version {args['model_version']}: cannot load its "
            f"artefacts from {directory}: {type(exc).__name__}: {exc}"
        )
        pb_utils.Logger.log_error(message)
        raise RuntimeError(message) from exc


def optional_input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_input(request: Any, name: str) -> np.ndarray:
    array = optional_input(request, name)
    if array is None:
        raise RequestError(f"input '{name}' is required")
    return array


def check_finite(name: str, array: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise RequestError(f"input '{name}' must be finite (got NaN or inf)")
    return array


def check_index(
    name: str, array: np.ndarray, size: int | None = None, minimum: int = 0
) -> np.ndarray:
    """Indices must be >= `minimum` (numpy would silently wrap negatives; candidate rows may
    be -1, an unfilled slot) and < `size` if given."""
    if array.size and array.min() < minimum:
        lowest = "negative" if minimum == 0 else f"below {minimum}"
        raise RequestError(f"input '{name}' must not be {lowest} (got {int(array.min())})")
    if size is not None and array.size and array.max() >= size:
        raise RequestError(f"input '{name}' must be below {size} (got {int(array.max())})")
    return array


def check_exclude(
    array: np.ndarray | None, max_exclude: int, name: str = "exclude_item_ids"
) -> np.ndarray | None:
    """An optional ragged id list (`exclude_item_ids`, `history_item_ids`) holds at most
    `max_exclude` ids per row."""
    if array is not None and array.shape[-1] > max_exclude:
        raise RequestError(
            f"input '{name}' has {array.shape[-1]} ids; at most {max_exclude} are accepted"
        )
    return array


def check_top_k(array: np.ndarray | None, max_top_k: int) -> np.ndarray | None:
    """`top_k` (optional for a direct call) lies in 1 .. `max_top_k` for every row."""
    if array is None:
        return None
    values = array.reshape(-1)
    bad = (values < 1) | (values > max_top_k)
    if bad.any():
        raise RequestError(
            f"input 'top_k' is out of range: top_k must be between 1 and {max_top_k} (the "
            f"candidates ranked per request), got {int(values[bad][0])}"
        )
    return array


def check_temperature(array: np.ndarray | None) -> np.ndarray | None:
    """`temperature` (optional) is finite and >= 0 for every row (0: no sampling)."""
    if array is None:
        return None
    values = array.reshape(-1)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise RequestError(
            f"input 'temperature' is out of range: temperature must be a finite number >= 0, "
            f"got {float(values[bad][0])}"
        )
    return array


def split(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(sizes)[:-1])


def output(name: str, array: np.ndarray) -> Any:
    return pb_utils.Tensor(name, np.ascontiguousarray(array))


def response(*tensors: Any) -> Any:
    return pb_utils.InferenceResponse(output_tensors=list(tensors))


def error_response(message: str, code: Any = None) -> Any:
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(
            message, pb_utils.TritonError.INVALID_ARG if code is None else code
        )
    )


def internal_error_response(model: str, exc: BaseException) -> Any:
    """INTERNAL for one request: the client learns what failed, the log gets the traceback."""
    pb_utils.Logger.log_error(
        f"model '{model}': unexpected error on one request:\n"
        + "".join(traceback.format_exception(exc))
    )
    detail = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]
    return error_response(
        f"model '{model}' failed on this request ({detail}); see the server log",
        pb_utils.TritonError.INTERNAL,
    )


def responses_from_outputs(outputs: dict[str, list[np.ndarray]], count: int) -> list[Any]:
    return [
        pb_utils.InferenceResponse(
            output_tensors=[output(name, per_request[i]) for name, per_request in outputs.items()]
        )
        for i in range(count)
    ]


def _run_guarded(model: str, run: Callable[[list[T]], list[Any]], items: list[T]) -> list[Any]:
    responses = run(items)
    if len(responses) != len(items):
        raise RuntimeError(f"model '{model}' produced {len(responses)} responses for {len(items)}")
    return responses


def answer_all(
    model: str,
    requests: list[Any],
    parse: Callable[[Any], T],
    run: Callable[[list[T]], list[Any]],
) -> list[Any]:
    """One response per request, in order; never raises.

    `parse(request)` reads and validates one request (RequestError -> INVALID_ARGUMENT for
    it alone); `run(items)` computes all parsed requests as one batch and returns one
    response each. If the batch fails, each request is run alone so that only the culprit
    gets an error and the rest of the dynamic batch is answered normally.
    """
    responses: list[Any] = [None] * len(requests)
    slots: list[int] = []
    items: list[T] = []
    # No `request.is_cancelled()` here: Triton's dynamic batcher drops cancelled requests
    # before they reach a stage, and in the Python backend each call is a round trip to the
    # server that took 12-17% of every stage's time (py-spy, concurrency 32; docs/errors.md).
    for slot, request in enumerate(requests):
        try:
            items.append(parse(request))
            slots.append(slot)
        except RequestError as exc:
            responses[slot] = error_response(str(exc))
        except Exception as exc:
            responses[slot] = internal_error_response(model, exc)
    if not items:
        return responses
    try:
        answered = _run_guarded(model, run, items)
    except Exception as batch_exc:
        if len(items) > 1:
            pb_utils.Logger.log_warn(
                f"model '{model}': batch of {len(items)} failed "
                f"({type(batch_exc).__name__}); answering its requests one at a time"
            )
        answered = []
        for item in items:
            try:
                answered.extend(_run_guarded(model, run, [item]))
            except RequestError as exc:
                answered.append(error_response(str(exc)))
            except Exception as exc:
                answered.append(internal_error_response(model, exc))
    for slot, answer in zip(slots, answered, strict=True):
        responses[slot] = answer
    return responses
