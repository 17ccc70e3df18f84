"""The one deviation this platform forces on the peer: the models merlin-systems exports for
Triton's `pytorch_libtorch` backend served on the Python backend instead.

Why: the server bundled here ships only the Python backend, and merlin-systems 23.08's
`PredictPyTorchTriton._export_torchscript_config` always writes
`platform: "pytorch_libtorch"` (merlin/systems/dag/runtimes/triton/ops/pytorch.py), so the
exported model cannot load as is. merlin-systems' own Python-backend PyTorch model
(merlin/systems/triton/models/pytorch_model.py) is not an option: it is the
Transformers4Rec path (pickled module + state dict, dict in/dict out) and moves every
input to the GPU with `.cuda()`. The BLS hop, the model files and the tensors stay as
merlin-systems exported them.

This module is imported inside every stand-in's Python-backend stub: it imports torch and
nothing of merlin, so a stub starts as fast as a libtorch model would load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

STAND_IN_MODEL_PY = (
    '"""Serves a model merlin-systems exported for `pytorch_libtorch` on the Python backend\n'
    '(see perf_analyzer/merlin_peer/libtorch_standin.py)."""\n\n'
    "from perf_analyzer.merlin_peer.libtorch_standin import (  # noqa: F401\n"
    "    LibtorchStandIn as TritonPythonModel,\n"
    ")\n"
)


class LibtorchStandIn:
    """A Python-backend model doing what Triton's `pytorch_libtorch` backend does for the
    models `PredictPyTorch` exports: load `model.pt` with torch.jit.load, pass each input
    tensor to forward() by argument name, return the result as the config's one output."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("torch_threads", {}).get("string_value")
        if threads:
            torch.set_num_threads(int(threads))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.model = torch.jit.load(str(version_dir / "model.pt")).eval()
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        arguments = self.model.forward.schema.arguments[1:]
        required = {a.name for a in arguments if not a.has_default_value()}
        known = {a.name for a in arguments}
        if not required <= set(self.inputs) <= known:
            raise ValueError(
                f"model.pt forward{tuple(a.name for a in arguments)} does not take the "
                f"config's inputs {self.inputs}"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            tensors = {
                name: torch.from_numpy(pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                for name in self.inputs
            }
            with torch.inference_mode():
                result = self.model(**tensors)
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor(self.output, result.numpy())])
            )
        return responses


def serve_libtorch_models_on_python(repository: Path, torch_threads: int) -> list[str]:
    """Point every `pytorch_libtorch` model of an exported repository at LibtorchStandIn;
    returns the models changed."""
    # Imported here: the stubs import this module and need none of the config tooling.
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    changed = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        if config.platform != "pytorch_libtorch":
            continue
        config.platform = ""
        config.backend = "python"
        # A libtorch-only setting; the Python backend would ignore it.
        del config.parameters["INFERENCE_MODE"]
        config.parameters["torch_threads"].string_value = str(torch_threads)
        config_path.write_text(text_format.MessageToString(config))
        for version_dir in config_path.parent.iterdir():
            if version_dir.is_dir() and (version_dir / "model.pt").exists():
                (version_dir / "model.py").write_text(STAND_IN_MODEL_PY)
        changed.append(config.name)
    return changed
