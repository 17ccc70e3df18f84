"""Triton model of the platform floor: takes a stage's inputs, returns zeros of its outputs.

Installed by perf_analyzer/floor.py as `model.py` of every stage of a copy of the served
repository (same names, configs, batching and ensemble). It does what any Python-backend
model must do, and nothing else: read each input from shared memory, answer every request
with tensors of the real shapes and types. Served behind the same ensemble, its latency is
what the platform costs before any stage computes anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

FLOOR_FILE = "floor.json"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        # The size a variable dimension (-1) of an output takes, e.g. top_k for item_ids.
        variable = int(json.loads((version_dir / FLOOR_FILE).read_text())["variable_dim"])
        rows = max(int(config.get("max_batch_size", 0)), 1)
        self.inputs = [tensor["name"] for tensor in config["input"]]
        # One zero block per output, sliced per request: no allocation on the request path.
        self.outputs = {
            tensor["name"]: np.zeros(
                (rows, *(variable if d == -1 else d for d in map(int, tensor["dims"]))),
                dtype=pb_utils.triton_string_to_numpy(tensor["data_type"]),
            )
            for tensor in config["output"]
        }

    def _answer(self, request: Any) -> Any:
        batch = 0
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                batch = max(batch, tensor.as_numpy().shape[0])
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, block[:batch])
                            for name, block in self.outputs.items()]
        )  # fmt: skip

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]
