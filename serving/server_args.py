"""The tritonserver command line, built in one place.

The local launcher (`serving.launcher`) and the Helm chart both start Triton with these
arguments; tests/test_helm.py renders the chart and checks its container args equal
`build_server_args` for the chart's settings, so the two cannot drift apart.
"""

from __future__ import annotations

from recsys.contract import MODEL_LOAD_ORDER
from recsys.settings import ServerSettings


def _flag(value: bool) -> str:
    return "true" if value else "false"


def build_server_args(
    server: ServerSettings,
    model_repository: str,
    *,
    admin_key: str,
    bind_address: str | None = None,
    models_to_load: tuple[str, ...] = MODEL_LOAD_ORDER,
) -> list[str]:
    """Arguments for `tritonserver` (without the binary itself).

    `admin_key` guards the model-repository API (load/unload/index): clients that serve
    traffic never need it. In Kubernetes it is the literal `$(TRITON_ADMIN_KEY)`, which
    the kubelet expands from a Secret-backed environment variable.
    """
    if not admin_key:
        raise ValueError("admin_key must be non-empty: the model-repository API stays restricted")
    address = bind_address or server.bind_address
    restricted = f"model-repository:{server.restricted_api_header}={admin_key}"
    args = [
        f"--model-repository={model_repository}",
        f"--model-control-mode={server.model_control_mode}",
    ]
    if server.model_control_mode == "explicit":
        args += [f"--load-model={name}" for name in models_to_load]
    args += [
        f"--http-address={address}",
        f"--http-port={server.http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={server.grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={server.metrics_port}",
        # p50/p90/p99 summaries (nv_inference_request_summary_us) for dashboards and alerts.
        "--metrics-config=summary_latencies=true",
        f"--strict-readiness={_flag(server.strict_readiness)}",
        f"--exit-on-error={_flag(server.exit_on_error)}",
        f"--log-verbose={server.log_verbose}",
        f"--backend-config=python,shm-default-byte-size={server.python_shm_default_byte_size}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
    ]
    return args
