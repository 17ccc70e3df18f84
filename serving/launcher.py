"""Start, wait for and stop a real `tritonserver` on a model repository.

The binary is the Triton Inference Server shipped in the nvidia-pytriton wheel (see
docs/PLATFORM notes in the README). Its Python backend needs the stub built for our
Python version next to `libtriton_python.so`, and the interpreter's own libpython on
LD_LIBRARY_PATH, or every Python model fails with `undefined symbol: _PyModule_Add`.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytriton

from recsys.settings import PROJECT_ROOT, ServerSettings, load_settings
from serving.server_args import build_server_args

PYTRITON_SERVER_DIR = Path(pytriton.__file__).resolve().parent / "tritonserver"
BACKENDS_DIR = PROJECT_ROOT / ".tools" / "triton" / "backends"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message carries its log tail."""


def tritonserver_binary() -> Path:
    binary = PYTRITON_SERVER_DIR / "bin" / "tritonserver"
    if not binary.exists():
        raise ServerStartError(f"tritonserver not found at {binary}: run `make setup`")
    return binary


def prepare_backends(backends_dir: Path = BACKENDS_DIR) -> Path:
    """A backend directory whose python backend carries the stub for this interpreter."""
    python_dir = backends_dir / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = PYTRITON_SERVER_DIR / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not (python_dir / "triton_python_backend_stub").exists():
        if not stub.exists():
            raise ServerStartError(f"no Python backend stub for Python {version} at {stub}")
        python_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(PYTRITON_SERVER_DIR / "backends" / "python", python_dir, dirs_exist_ok=True)
        shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return backends_dir


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the launching process dies, however it dies, so a
    killed test run or benchmark never leaves a server holding ports and memory."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    # The stub's RPATH points into the wheel; our copy of it finds its libcudart here.
    wheel_libs = str(PYTRITON_SERVER_DIR.parent.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, wheel_libs, env.get("LD_LIBRARY_PATH", "")) if p
    )
    # The stub's embedded interpreter ignores PYTHONPATH for site-packages and finds its
    # environment from the `python` first on PATH (as pytriton does): put the venv's first.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class TritonServer:
    """A running tritonserver; use as a context manager or call start()/stop()."""

    repository: Path
    server: ServerSettings
    log_path: Path
    admin_key: str = field(
        default_factory=lambda: os.environ.get("TRITON_ADMIN_KEY") or secrets.token_hex(16)
    )
    startup_timeout_s: float = 180.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{self.server.bind_address}:{self.server.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.server.bind_address}:{self.server.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.server.bind_address}:{self.server.metrics_port}/metrics"

    def command(self) -> list[str]:
        args = build_server_args(
            self.server, str(self.repository.resolve()), admin_key=self.admin_key
        )
        return [str(tritonserver_binary()), *args, f"--backend-directory={prepare_backends()}"]

    def check_ports_free(self) -> None:
        """Refuse to start beside another server: its readiness would be mistaken for ours."""
        for name, port in (("http", self.server.http_port), ("grpc", self.server.grpc_port),
                           ("metrics", self.server.metrics_port)):  # fmt: skip
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.server.bind_address, port))
                except OSError as exc:
                    raise ServerStartError(
                        f"{name} port {self.server.bind_address}:{port} is already in use "
                        f"(another tritonserver?): {exc}"
                    ) from exc

    def start(self) -> TritonServer:
        self.check_ports_free()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.wait_ready()
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(
            f"tritonserver not ready after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the model repository with tritonserver.")
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--config", type=Path, default=None, help="settings YAML")
    parser.add_argument("--log", type=Path, default=PROJECT_ROOT / "artifacts" / "tritonserver.log")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if not (args.repository / "recommender").exists():
        parser.error(f"{args.repository} holds no model repository: run `make repository` first")
    server = TritonServer(args.repository, settings.server, args.log)

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the finally below: the server must not outlive us

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    server.start()
    print(f"tritonserver ready (log: {args.log})")
    print(f"  HTTP    http://{server.http_url}")
    print(f"  gRPC    {server.grpc_url}")
    print(f"  metrics {server.metrics_url}")
    print(
        "  model-repository API key: $TRITON_ADMIN_KEY"
        if os.environ.get("TRITON_ADMIN_KEY")
        else f"  model-repository API key: {server.admin_key}"
    )
    print("Ctrl-C stops the server.")
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
