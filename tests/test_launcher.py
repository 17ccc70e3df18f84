"""`python -m serving.launcher` (what `make serve` runs) as a supervisor sees it: it never
leaves an orphaned tritonserver behind, and it exits non-zero when tritonserver dies."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from client.recommender_client import RecommenderClient
from recsys.settings import PROJECT_ROOT, Settings
from serving import versions
from serving.launcher import EXIT_SERVER_DIED, EXIT_STUB_UNRECOVERABLE, stub_model_name
from serving.repository import read_config, write_config
from tests.conftest import TrainedSet, free_port
from tests.test_faults import Load, wait_for

WAIT_S = 240.0  # upper bound for a server start or an exit on a busy 2-core machine


class Launcher:
    """`python -m serving.launcher` in a subprocess on free ports; its stdout and stderr go
    to one file, read while it runs."""

    def __init__(self, repository: Path, settings: Settings, root: Path) -> None:
        ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
        self.settings = settings.model_copy(
            update={"server": settings.server.model_copy(update=ports)}
        )
        self.config = config = root / "config.yaml"
        config.write_text(yaml.safe_dump(self.settings.model_dump(mode="json")))
        self.output_path = root / "launcher.out"
        self.log_path = root / "tritonserver.log"
        with self.output_path.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.launcher", "--repository", str(repository),
                 "--config", str(config), "--log", str(self.log_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                # Unbuffered: the test reads what the launcher printed while it runs.
                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        self.stubs: list[psutil.Process] = []  # seen under this launcher's server

    @property
    def grpc_url(self) -> str:
        return f"{self.settings.server.bind_address}:{self.settings.server.grpc_port}"

    def http(self, path: str) -> str:
        return f"http://{self.settings.server.bind_address}:{self.settings.server.http_port}{path}"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while "Ctrl-C stops the server." not in self.output():
            assert self.process.poll() is None, f"launcher exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"launcher not ready:\n{self.output()}"
            time.sleep(0.5)
        self.stubs = self.server().children()

    def server(self) -> psutil.Process:
        children = psutil.Process(self.process.pid).children()
        (server,) = (child for child in children if child.name() == "tritonserver")
        return server

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"launcher still running:\n{self.output()}") from None

    def close(self) -> None:
        """Stop the launcher (SIGTERM: it stops its server), and anything it left behind."""
        with contextlib.suppress(psutil.Error, ValueError):  # no server (left) to ask
            self.stubs += self.server().children()  # stubs started by a reload, too
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()  # its server gets SIGTERM from the kernel (PDEATHSIG)
                self.process.wait()
        # Stubs notice a dead server within seconds and exit; make sure none lingers.
        _, alive = psutil.wait_procs(self.stubs, timeout=30)
        for stub in alive:
            stub.kill()


StartLauncher = Callable[[Path, Settings], Launcher]


@pytest.fixture
def start_launcher(tmp_path: Path) -> Iterator[StartLauncher]:
    """Starts launchers (each in its own directory) and stops them all after the test."""
    started: list[Launcher] = []

    def start(repository: Path, settings: Settings) -> Launcher:
        root = tmp_path / f"launcher{len(started)}"
        root.mkdir()
        started.append(Launcher(repository, settings, root))
        return started[-1]

    yield start
    for launcher in started:
        launcher.close()


@pytest.mark.server
def test_server_dies_with_a_killed_launcher(trained: TrainedSet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from recsys.settings import load_settings
        from serving.launcher import TritonServer
        server = load_settings().server.model_copy(update={{
            "http_port": {free_port()}, "grpc_port": {free_port()},
            "metrics_port": {free_port()}}})
        launcher = TritonServer(Path({str(trained.repository)!r}), server,
                                Path({str(tmp_path / "log.txt")!r}))
        launcher.start()
        print(launcher.process.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(server_pid)
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the launcher
        parent.wait(timeout=10)
        deadline = time.monotonic() + 60
        while psutil.pid_exists(server_pid) and time.monotonic() < deadline:
            if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.5)
        gone = not psutil.pid_exists(server_pid) or (
            psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
        )
        assert gone, "tritonserver outlived its launcher"
    finally:
        parent.kill()


@pytest.mark.server
def test_the_launcher_exits_non_zero_when_tritonserver_dies(
    trained: TrainedSet, start_launcher: StartLauncher
) -> None:
    """A supervisor (systemd, a container runtime) restarts `make serve` only if it fails:
    a tritonserver that died (here SIGKILL, as the OOM killer sends) must fail the launcher."""
    launcher = start_launcher(trained.repository, trained.settings)
    launcher.wait_ready()
    last_logged = launcher.log_path.read_text(errors="replace").splitlines()[-1]
    launcher.server().kill()
    assert launcher.wait_exit() == EXIT_SERVER_DIED, launcher.output()
    output = launcher.output()
    assert "tritonserver exited on its own (killed by SIGKILL)" in output
    # The log tail follows (dying stubs may have added lines after the last one seen here).
    tail = output.split(f"log tail ({launcher.log_path}):", 1)[1]
    assert last_logged in tail


def test_serve_refuses_a_repository_built_on_another_schema(trained: TrainedSet) -> None:
    from serving.launcher import schema_mismatch

    assert schema_mismatch(trained.repository, "synthetic") is None
    problem = schema_mismatch(trained.repository, "movielens")
    assert problem is not None
    assert "serves schema 'synthetic' (version 1), not 'movielens'" in problem
    assert "users: feature 'gender' is new" in problem


# --- the stub watchdog, end to end (serving/launcher.py StubWatchdog, docs/errors.md) ---

RECOVERY_S = 120.0  # a killed stub's model answers again within this (observed ~8-30 s)
TOP_K = 8


@pytest.fixture
def repository_copy(trained: TrainedSet, tmp_path: Path) -> Path:
    """A repository of the test's own: the watchdog reloads models in it, a test breaks it."""
    copy = tmp_path / "model_repository"
    shutil.copytree(trained.repository, copy)
    return copy


def stub_of(server: psutil.Process, model: str) -> psutil.Process:
    for child in server.children():
        if child.status() != psutil.STATUS_ZOMBIE and stub_model_name(child) == model:
            return child
    raise AssertionError(f"no live stub for {model}")


@pytest.mark.server
def test_the_watchdog_reloads_a_killed_stub_while_traffic_flows(
    trained: TrainedSet, repository_copy: Path, start_launcher: StartLauncher
) -> None:
    launcher = start_launcher(repository_copy, trained.settings)
    launcher.wait_ready()
    users = [*trained.data.valid["user_id"].drop_duplicates().head(3).tolist(), -7]
    with RecommenderClient(launcher.grpc_url, "grpc", retries=0) as client:
        expected = {int(user): client.recommend(int(user), TOP_K).item_ids for user in users}
    load = Load([RecommenderClient(launcher.grpc_url, "grpc", retries=0) for _ in range(2)],
                expected)  # fmt: skip
    try:
        wait_for(lambda: load.count("ok") > 5, "traffic before the fault")
        stub_of(launcher.server(), "reorder").kill()
        killed = time.monotonic()
        wait_for(lambda: load.count("INTERNAL") > 0, "requests to fail after the stub was killed")
        wait_for(lambda: "watchdog: 'reorder' reloaded" in launcher.output(),
                 "the watchdog to reload the model", RECOVERY_S)  # fmt: skip
        served = load.count("ok")
        wait_for(lambda: load.count("ok") > served + 5, "answers after the reload", RECOVERY_S)
        recovery_s = time.monotonic() - killed
    finally:
        outcomes = load.stop()
    assert recovery_s < RECOVERY_S
    output = launcher.output()
    assert "watchdog: the Python-backend stub of 'reorder' died; reloading it" in output
    assert outcomes["wrong"] == 0
    # Requests queued behind the dead stub may get the queue policy's retriable UNAVAILABLE.
    assert set(outcomes) <= {"ok", "INTERNAL", "UNAVAILABLE"}, outcomes
    refusals = ("is not healthy", "Exceeds maximum queue size", "Request timeout expired")
    assert all(any(r in str(e) for r in refusals) for e in load.errors), load.errors
    assert launcher.process.poll() is None, output  # still serving: nothing to restart
    with RecommenderClient(launcher.grpc_url, "grpc", retries=0) as client:
        assert all(client.recommend(u, TOP_K).item_ids == items for u, items in expected.items())


@pytest.mark.server
def test_the_launcher_stops_with_its_own_exit_code_when_a_reload_fails(
    trained: TrainedSet, repository_copy: Path, start_launcher: StartLauncher
) -> None:
    """A stub whose model cannot be loaded again: the launcher stops the server and exits
    with EXIT_STUB_UNRECOVERABLE, for a supervisor to start a fresh one."""
    launcher = start_launcher(repository_copy, trained.settings)
    launcher.wait_ready()
    server = launcher.server()
    # Breaks only the reload: the running stub has imported model.py already.
    model_py = repository_copy / "reorder" / "1" / "model.py"
    model_py.write_text('raise RuntimeError("broken on purpose")\n' + model_py.read_text())
    stub_of(server, "reorder").kill()
    assert launcher.wait_exit() == EXIT_STUB_UNRECOVERABLE, launcher.output()
    output = launcher.output()
    assert "watchdog: the Python-backend stub of 'reorder' died; reloading it" in output
    assert "error: reloading model 'reorder' failed" in output
    assert "stopping the server" in output
    assert "watchdog: 'reorder' reloaded" not in output
    assert not server.is_running(), "the launcher left its tritonserver running"


@pytest.mark.server
def test_the_watchdog_waits_for_the_lock_and_reloads_the_served_config_not_a_half_promotion(
    trained: TrainedSet, repository_copy: Path, start_launcher: StartLauncher
) -> None:
    """Reloading a model changes the server like a promotion does: the watchdog takes the
    versions commands' lock. After a promote was killed half-way the configs on disk are
    half-switched: the dead stage comes back with the config the server served it with,
    without waiting for someone to run the promote again."""
    launcher = start_launcher(repository_copy, trained.settings)
    launcher.wait_ready()
    # The stubs read settings of their own (monitoring.sample_rate): from the launcher's file.
    stub_config = stub_of(launcher.server(), "user_features").environ().get("RECSYS_CONFIG")
    assert stub_config == str(launcher.config.resolve())
    served = json.loads(urllib.request.urlopen(launcher.http("/v2/models/reorder/config")).read())
    users = trained.data.valid["user_id"].drop_duplicates().head(2).tolist()
    with versions.repository_lock(repository_copy):  # as a running promote holds it
        stub_of(launcher.server(), "reorder").kill()
        wait_for(lambda: "a versions command holds the repository lock" in launcher.output(),
                 "the watchdog to wait for the lock", RECOVERY_S)  # fmt: skip
        time.sleep(3)  # several watchdog rounds: still no reload while the lock is held
        assert "watchdog: 'reorder' reloaded" not in launcher.output()
        # What a promote killed half-way leaves: a journal entry, a config on disk that
        # differs from the one served.
        versions.set_pending(
            repository_copy, {"action": "promote", "version": 2, "previous": 1, "server": "x"}
        )
        half_switched = read_config(repository_copy / "reorder")
        half_switched.parameters["half_switched"].string_value = "yes"
        write_config(half_switched, repository_copy / "reorder")
    wait_for(lambda: "watchdog: 'reorder' reloaded" in launcher.output(),
             "the reload once the lock is free", RECOVERY_S)  # fmt: skip
    assert "interrupted `promote 2` left the configs on disk half-switched" in launcher.output()
    reloaded = json.loads(urllib.request.urlopen(launcher.http("/v2/models/reorder/config")).read())
    assert "half_switched" not in reloaded["parameters"], "reloaded the config on disk"
    assert reloaded["version_policy"] == served["version_policy"]
    with RecommenderClient(launcher.grpc_url, "grpc", retries=0) as client:
        assert len(client.recommend(int(users[0]), TOP_K).item_ids) == TOP_K
    assert versions.pending(repository_copy) is not None  # left for the promote to finish
    assert launcher.process.poll() is None, launcher.output()
