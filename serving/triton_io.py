"""Helpers shared by the Python-backend models: batch gathering and per-request errors.

Only imported inside Triton's Python backend stub, where `triton_python_backend_utils`
exists. Dynamic batching hands `execute` a list of requests; models gather each input
across all of them, run once, and split the result back per request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class RequestError(ValueError):
    """A problem with one request's inputs; answered as INVALID_ARGUMENT for that request."""


def version_dir(args: dict[str, str]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def parameters(args: dict[str, str]) -> dict[str, str]:
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def optional_input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def required_input(request: Any, name: str) -> np.ndarray:
    array = optional_input(request, name)
    if array is None:
        raise RequestError(f"input '{name}' is required")
    return array


def gather(requests: list[Any], name: str) -> tuple[np.ndarray, list[int]]:
    """Concatenate input `name` of all requests along the batch axis, with each batch size."""
    arrays = [required_input(request, name) for request in requests]
    return np.concatenate(arrays, axis=0), [len(a) for a in arrays]


def split(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(sizes)[:-1])


def output(name: str, array: np.ndarray) -> Any:
    return pb_utils.Tensor(name, np.ascontiguousarray(array))


def response(*tensors: Any) -> Any:
    return pb_utils.InferenceResponse(output_tensors=list(tensors))


def error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    )


def responses_from_outputs(outputs: dict[str, list[np.ndarray]], count: int) -> list[Any]:
    return [
        pb_utils.InferenceResponse(
            output_tensors=[output(name, per_request[i]) for name, per_request in outputs.items()]
        )
        for i in range(count)
    ]
