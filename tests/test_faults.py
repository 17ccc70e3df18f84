"""Faults against a real tritonserver of this module's own (the session's is never touched):
a killed Python-backend stub, corrupted and missing model files at load time, and a
server restart under clients that keep sending. Observed behaviours: docs/errors.md.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client.recommender_client import RecommenderClient, RecommenderClientError
from serving.launcher import StubWatchdog, TritonServer, stub_model_name
from tests.conftest import TrainedSet, free_port
from tests.threads import CheckedThread

pytestmark = pytest.mark.server
TOP_K = 8
WAIT_S = 240.0  # upper bound for anything to happen on a busy 2-core machine


@pytest.fixture(scope="module")
def own_server(
    trained: TrainedSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("faults")
    repository = root / "model_repository"
    shutil.copytree(trained.repository, repository)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    settings = trained.settings.server.model_copy(update=ports)
    with TritonServer(repository, settings, root / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def expected(trained: TrainedSet, own_server: TritonServer) -> dict[int, list[int]]:
    """Each user's answer before any fault: what every later answer must equal."""
    users = [*trained.data.valid["user_id"].drop_duplicates().head(5).tolist(), -7]
    client = RecommenderClient(own_server.grpc_url, "grpc")
    return {int(user): client.recommend(int(user), TOP_K).item_ids for user in users}


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Load:
    """Client threads sending known users' requests until stopped, checking every answer."""

    def __init__(self, clients: list[RecommenderClient], expected: dict[int, list[int]]) -> None:
        self.expected = expected
        self.outcomes: Counter[str] = Counter()
        self.errors: list[RecommenderClientError] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.clients = clients
        # Checked: a sending thread that dies of anything but a client error (which is
        # counted) fails the test in count() or stop(), instead of a warning and less load.
        self.threads = [
            CheckedThread(self._run, c, name=f"load-{i}") for i, c in enumerate(clients)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, client: RecommenderClient) -> None:
        users = list(self.expected)
        i = 0
        deadline = time.monotonic() + 3 * WAIT_S  # bounded even if a test forgets stop()
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            user = users[i % len(users)]
            i += 1
            try:
                got = client.recommend(user, TOP_K).item_ids
                outcome = "ok" if got == self.expected[user] else "wrong"
            except RecommenderClientError as exc:
                outcome = exc.code
                with self.lock:
                    self.errors.append(exc)
                time.sleep(0.05)
            with self.lock:
                self.outcomes[outcome] += 1

    def count(self, outcome: str) -> int:
        for thread in self.threads:  # what a test waits for may never come from a dead one
            thread.check()
        with self.lock:
            return self.outcomes[outcome]

    def stop(self) -> Counter[str]:
        """Stop and join the threads; raises BackgroundThreadError if one died."""
        self.stop_event.set()
        try:
            for thread in self.threads:
                thread.join(timeout=WAIT_S)
        finally:
            for client in self.clients:  # an open HTTP keep-alive connection delays shutdown
                client.close()
        return self.outcomes


def stub_of(server: TritonServer, model: str) -> psutil.Process:
    assert server.process is not None
    for child in psutil.Process(server.process.pid).children():
        if child.status() != psutil.STATUS_ZOMBIE and stub_model_name(child) == model:
            return child
    raise AssertionError(f"no live stub for {model}")


def model_ready(server: TritonServer, model: str) -> bool:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return bool(client.is_model_ready(model))
    finally:
        client.close()  # an open keep-alive connection would delay the server's shutdown


def test_a_killed_stub_fails_its_requests_until_the_watchdog_reloads_the_model(
    own_server: TritonServer, expected: dict[int, list[int]]
) -> None:
    watchdog = StubWatchdog(own_server)
    assert watchdog.dead_models() == []  # learns the live stubs
    probe = RecommenderClient(own_server.grpc_url, "grpc", retries=0)
    user = next(iter(expected))
    load = Load([RecommenderClient(own_server.grpc_url, "grpc", retries=0) for _ in range(2)],
                expected)  # fmt: skip
    try:
        wait_for(lambda: load.count("ok") > 5, "traffic before the fault")
        stub_of(own_server, "reorder").kill()

        def failing() -> bool:
            try:
                probe.recommend(user, TOP_K)
                return False
            except RecommenderClientError as exc:
                assert exc.code == "INTERNAL"
                assert "Stub process 'reorder_0_0' is not healthy" in str(exc)
                return True

        wait_for(failing, "requests to fail after the stub was killed")
        # Triton 2.51 neither restarts the stub nor tells: server and model stay "ready".
        assert own_server.is_ready() and model_ready(own_server, "reorder")
        assert watchdog.check() == ["reorder"]
        assert probe.recommend(user, TOP_K).item_ids == expected[user]
        served = load.count("ok")
        wait_for(lambda: load.count("ok") > served + 5, "traffic after the recovery")
    finally:
        outcomes = load.stop()
    assert outcomes["wrong"] == 0
    # While the dead stub's requests fail, others wait in the bounded queues: the queue
    # policy refuses them with UNAVAILABLE (retriable), never with a wrong answer.
    assert set(outcomes) <= {"ok", "INTERNAL", "UNAVAILABLE"}, outcomes
    refusals = ("is not healthy", "Exceeds maximum queue size", "Request timeout expired")
    assert all(any(r in str(e) for r in refusals) for e in load.errors), load.errors
    assert watchdog.dead_models() == []


def test_corrupted_or_missing_model_files_fail_the_load_and_the_serving_version_answers(
    own_server: TritonServer, expected: dict[int, list[int]]
) -> None:
    version_dir = own_server.repository / "{}" / "1"
    corrupted = Path(str(version_dir).format("ranking")) / "model.pt"
    missing = Path(str(version_dir).format("reorder")) / "catalog.npz"
    backups = {path: path.read_bytes() for path in (corrupted, missing)}
    admin = {own_server.server.restricted_api_header: own_server.admin_key}

    def load(model: str) -> str:
        client = httpclient.InferenceServerClient(own_server.http_url, network_timeout=WAIT_S)
        with pytest.raises(InferenceServerException) as info:
            client.load_model(model, headers=admin)
        client.close()
        return str(info.value)

    try:
        corrupted.write_bytes(b"not a TorchScript archive" * 40)
        missing.unlink()
        with ThreadPoolExecutor(max_workers=2) as pool:  # Triton loads them in parallel
            ranking_error, reorder_error = pool.map(load, ["ranking", "reorder"])
    finally:
        for path, content in backups.items():
            path.write_bytes(content)
    assert f"cannot load its artefacts from {corrupted.parent}" in ranking_error
    assert "PytorchStreamReader failed" in ranking_error
    assert f"cannot load its artefacts from {missing.parent}" in reorder_error
    assert "No such file" in reorder_error or "FileNotFoundError" in reorder_error
    log = own_server.log_path.read_text(errors="replace")
    assert f"model 'ranking' version 1: cannot load its artefacts from {corrupted.parent}" in log
    # The versions loaded before keep serving, unchanged.
    with RecommenderClient(own_server.grpc_url, "grpc", retries=0) as client:
        for user, items in expected.items():
            assert client.recommend(user, TOP_K).item_ids == items
    assert model_ready(own_server, "ranking") and model_ready(own_server, "reorder")


def test_clients_ride_through_a_server_restart_without_wrong_answers(
    own_server: TritonServer, expected: dict[int, list[int]]
) -> None:
    def patient(protocol: str) -> RecommenderClient:
        return RecommenderClient(
            own_server.grpc_url if protocol == "grpc" else own_server.http_url,
            protocol,  # type: ignore[arg-type]
            timeout_s=30.0,
            retries=10_000,
            backoff_s=0.1,
            max_backoff_s=1.0,
            retry_deadline_s=WAIT_S,
        )

    load = Load([patient("grpc"), patient("grpc"), patient("http"), patient("http")], expected)
    try:
        wait_for(lambda: load.count("ok") > 10, "traffic before the restart")
        # SIGTERM, then SIGKILL after 10 s: Triton would otherwise wait up to 30 s for the
        # HTTP clients' keep-alive connections to close (as Kubernetes' grace period would).
        own_server.stop(timeout_s=10)
        before = load.count("ok")
        own_server.start()  # in this (main) thread: the server dies with the thread that started it
        wait_for(lambda: load.count("ok") > before + 20, "traffic after the restart")
    finally:
        outcomes = load.stop()
    assert outcomes["wrong"] == 0
    assert set(outcomes) == {"ok"}, [str(e) for e in load.errors[:3]]
