"""A running tritonserver's model-repository API and per-version inference, over gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc

from serving.repository import config_json

# States in Triton's repository index of a version that can still run requests.
LIVE_STATES = frozenset({"READY", "LOADING", "UNLOADING"})


@dataclass(frozen=True)
class TritonAdmin:
    """A running tritonserver's model-repository API and per-version inference, over gRPC.

    Not HTTP: Triton's HTTP server answers a load on the thread that owns the caller's
    connection and holds it until the model is loaded, so HTTP clients whose connections
    share that thread stall for the whole load (a 10 s client timeout was hit in a test).
    gRPC inference runs on its own threads and did not stall.
    """

    url: str  # gRPC host:port
    admin_key: str
    header: str = "triton-admin-key"
    # A stage load starts a Python stub that imports torch and NVTabular: slow on a busy host.
    timeout_s: float = 600.0

    def _client(self) -> grpcclient.InferenceServerClient:
        # One channel per call keeps concurrent loads independent of each other.
        return grpcclient.InferenceServerClient(self.url)

    @property
    def headers(self) -> dict[str, str]:
        # Triton matches a restricted gRPC protocol's key under this prefixed metadata name.
        return {f"triton-grpc-protocol-{self.header}": self.admin_key}

    def load(self, name: str, config: mc.ModelConfig) -> None:
        with self._client() as client:
            client.load_model(
                name,
                headers=self.headers,
                config=config_json(config),
                client_timeout=self.timeout_s,
            )

    def states(self) -> dict[tuple[str, int], str]:
        """(model, version) -> state, as Triton's repository index reports them."""
        with self._client() as client:
            index = client.get_model_repository_index(
                headers=self.headers, as_json=True, client_timeout=60.0
            )
        return {
            (entry["name"], int(entry["version"])): entry.get("state", "")
            for entry in index.get("models", [])
            if str(entry.get("version", "")).isdigit()
        }

    def infer(
        self,
        name: str,
        version: int | None,
        inputs: dict[str, tuple[np.ndarray, str]],
        outputs: tuple[str, ...],
    ) -> dict[str, np.ndarray]:
        tensors = []
        for input_name, (array, datatype) in inputs.items():
            tensor = grpcclient.InferInput(input_name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        with self._client() as client:
            result = client.infer(
                name,
                tensors,
                model_version="" if version is None else str(version),
                outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                client_timeout=60.0,
            )
        return {o: result.as_numpy(o) for o in outputs}


def live_versions(admin: TritonAdmin) -> dict[int, list[str]]:
    """version -> models loaded (READY) at that version on the server."""
    loaded: dict[int, list[str]] = {}
    for (name, version), state in sorted(admin.states().items()):
        if state == "READY":
            loaded.setdefault(version, []).append(name)
    return loaded
