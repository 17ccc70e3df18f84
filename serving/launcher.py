"""Start, wait for and stop a real `tritonserver` on a model repository.

The binary is the Triton Inference Server shipped in the nvidia-pytriton wheel (see
docs/PLATFORM notes in the README). Its Python backend needs the stub built for our
Python version next to `libtriton_python.so`, and the interpreter's own libpython on
LD_LIBRARY_PATH, or every Python model fails with `undefined symbol: _PyModule_Add`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
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

import psutil
import pytriton

from recsys.settings import PROJECT_ROOT, ServerSettings, load_settings
from serving.server_args import build_server_args
from serving.versions.state import LockBusyError, pending, repository_lock

PYTRITON_SERVER_DIR = Path(pytriton.__file__).resolve().parent / "tritonserver"
BACKENDS_DIR = PROJECT_ROOT / ".tools" / "triton" / "backends"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
STUB_PROCESS_NAME = "triton_python_backend_stub"
# Exit code of `python -m serving.launcher` when a dead stub could not be brought back:
# the server is stopped so that a supervisor (Kubernetes, systemd) starts a fresh one.
EXIT_STUB_UNRECOVERABLE = 3
# Exit code when tritonserver itself exited (crash, OOM kill, a signal sent to it): the
# launcher must not report success then, or a supervisor would not restart it.
EXIT_SERVER_DIED = 4


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


def server_environment(config: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if config is not None:
        # The models read settings of their own (monitoring.sample_rate) through
        # recsys.settings.load_settings: they must see the file the server was started with.
        env["RECSYS_CONFIG"] = str(config.resolve())
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
    # The settings file the caller loaded (None: $RECSYS_CONFIG or the default, inherited).
    config: Path | None = None
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
            env=server_environment(self.config),
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


class StubRecoveryError(RuntimeError):
    """A dead Python-backend stub's model could not be loaded again."""


def stub_model_name(process: psutil.Process) -> str | None:
    """The model a live Python-backend stub serves, from its command line
    (`triton_python_backend_stub <repository>/<model>/<version>/model.py ...`)."""
    cmdline = process.cmdline()
    if len(cmdline) < 2 or not cmdline[0].endswith(STUB_PROCESS_NAME):
        return None
    return Path(cmdline[1]).parent.parent.name


@dataclass
class StubWatchdog:
    """Finds Python-backend stubs that died under a running tritonserver and reloads their
    models through the repository API.

    Triton 2.51 neither restarts a stub that died nor reports it: /v2/health/ready and the
    model's ready endpoint stay 200 while every request routed to that model fails with
    INTERNAL "Stub process '<instance>' is not healthy" (docs/errors.md). Such a stub stays a
    zombie child of the server, which is how it is recognised here; a stub that Triton
    stopped itself (unload, reload) is reaped and simply disappears.

    Reloading changes the server's models like a promotion does, so it takes the same
    repository lock (serving/versions/state.py): while a versions command runs, the dead
    models wait for it. A model is reloaded with the config the server was serving it with
    (asked of the server), never the one on disk: after a promote or rollback was killed
    half-way (journaled in versions.json) the disk may hold half-switched configs, and the
    dead stage comes back as it served, without waiting for someone to re-run the command.
    """

    server: TritonServer
    http_timeout_s: float = 300.0
    _stubs: dict[int, str] = field(default_factory=dict)  # pid -> model, seen alive
    _waiting: set[str] = field(default_factory=set)  # dead, not reloaded yet
    _said: str = ""  # why the waiting models wait, printed once per reason

    def dead_models(self) -> list[str]:
        """Models with a stub that died since the last call (each dead stub reported once)."""
        if self.server.process is None:
            return []
        try:
            children = psutil.Process(self.server.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        dead = set()
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    if child.pid in self._stubs:
                        dead.add(self._stubs.pop(child.pid))
                elif child.pid not in self._stubs and (model := stub_model_name(child)):
                    self._stubs[child.pid] = model
            except psutil.NoSuchProcess:
                self._stubs.pop(child.pid, None)
        alive = {child.pid for child in children}
        for pid in [pid for pid in self._stubs if pid not in alive]:
            del self._stubs[pid]
        return sorted(dead)

    def reload(self, model: str) -> None:
        """Load `model` again with its current config plus a fresh `watchdog_restart`
        parameter. A plain load of an unchanged model is a no-op in Triton 2.51 even when its
        stub is dead; a changed config forces a full reload (new instances, same versions)."""
        base = f"http://{self.server.http_url}/v2"
        try:
            with urllib.request.urlopen(f"{base}/models/{model}/config", timeout=30) as answer:
                config = json.loads(answer.read())
            config.setdefault("parameters", {})["watchdog_restart"] = {
                "string_value": str(time.time())
            }
            request = urllib.request.Request(
                f"{base}/repository/models/{model}/load",
                data=json.dumps({"parameters": {"config": json.dumps(config)}}).encode(),
                method="POST",
                headers={self.server.server.restricted_api_header: self.server.admin_key},
            )
            with urllib.request.urlopen(request, timeout=self.http_timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise StubRecoveryError(f"reloading model {model!r} failed: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StubRecoveryError(f"reloading model {model!r} failed: {exc}") from exc

    def check(self) -> list[str]:
        """Reload every model whose stub died, when the repository lock is free and no
        promotion is half-done; returns those reloaded. Raises StubRecoveryError."""
        for model in self.dead_models():
            print(f"watchdog: the Python-backend stub of {model!r} died; reloading it", flush=True)
            self._waiting.add(model)
        if not self._waiting:
            return []
        repository = self.server.repository
        try:
            with repository_lock(repository):
                operation = pending(repository)
                if operation is not None and operation["action"] in ("promote", "rollback"):
                    print(
                        f"watchdog: an interrupted `{operation['action']} {operation['version']}`"
                        " left the configs on disk half-switched; reloading with the configs "
                        "the server serves. Run that command again to finish it.",
                        flush=True,
                    )
                reloaded = sorted(self._waiting)
                for model in reloaded:
                    self.reload(model)
                    self._waiting.discard(model)
                    print(f"watchdog: {model!r} reloaded", flush=True)
        except LockBusyError:
            self._wait("a versions command holds the repository lock; reloading after it")
            return []
        self._said = ""
        return reloaded

    def _wait(self, why: str) -> None:
        if why != self._said:
            print(f"watchdog: {', '.join(sorted(self._waiting))} waiting: {why}", flush=True)
            self._said = why


def describe_exit(returncode: int) -> str:
    """`exit code 1`, or `killed by SIGKILL` for a process a signal ended (Popen reports -N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def report_server_death(server: TritonServer) -> int:
    """Say on stderr how tritonserver ended, with its log tail; the launcher's exit code."""
    returncode = server.process.returncode if server.process is not None else None
    how = "an unknown exit" if returncode is None else describe_exit(returncode)
    print(
        f"error: tritonserver exited on its own ({how}); log tail ({server.log_path}):\n"
        f"{server.log_tail()}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_SERVER_DIED


def schema_mismatch(repository: Path, wanted: str) -> str | None:
    """Why `repository` does not serve schema `wanted`, or None if it does."""
    from recsys.schema import differences, load_schema
    from serving.repository import read_config, version_schema

    ensemble = read_config(repository / "recommender")
    version = ensemble.ensemble_scheduling.step[0].model_version
    built, asked = version_schema(repository, version), load_schema(wanted)
    found = differences(built, asked)
    if not found:
        return None
    return (
        f"{repository} serves schema {built.name!r} (version {version}), not {asked.name!r}: "
        + "; ".join(found[:5])
        + f". Build it first: make repository SCHEMA={wanted} DATA_DIR=..."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the model repository with tritonserver.")
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--config", type=Path, default=None, help="settings YAML")
    parser.add_argument(
        "--schema",
        default=None,
        help="refuse to serve unless the repository was built with this feature schema",
    )
    parser.add_argument("--log", type=Path, default=PROJECT_ROOT / "artifacts" / "tritonserver.log")
    parser.add_argument(
        "--no-watchdog",
        action="store_true",
        help="do not reload models whose Python-backend stub died (see docs/errors.md)",
    )
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if not (args.repository / "recommender").exists():
        parser.error(f"{args.repository} holds no model repository: run `make repository` first")
    if args.schema:
        problem = schema_mismatch(args.repository, args.schema)
        if problem:
            parser.error(problem)
    server = TritonServer(args.repository, settings.server, args.log, config=args.config)

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
    watchdog = None if args.no_watchdog else StubWatchdog(server)
    try:
        while server.process is not None and server.process.poll() is None:
            if watchdog is not None:
                watchdog.check()
            time.sleep(1)
    except StubRecoveryError as exc:
        if server.process is not None and server.process.poll() is not None:
            return report_server_death(server)  # the reload failed because the server died
        print(f"error: {exc}; stopping the server", file=sys.stderr, flush=True)
        return EXIT_STUB_UNRECOVERABLE
    except KeyboardInterrupt:
        return 0  # asked to stop (Ctrl-C, SIGTERM): a clean exit
    finally:
        server.stop()
    # The loop ends only when tritonserver exited without being asked to.
    return report_server_death(server)


if __name__ == "__main__":
    raise SystemExit(main())
