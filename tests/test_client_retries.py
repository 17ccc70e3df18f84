"""The client's failure handling: retries on UNAVAILABLE only, timeouts, clear exceptions.

Against real sockets: a port with nothing listening (refused), a socket that accepts and
never answers (timeout), and the session's tritonserver (invalid requests). A real server
restart under a sending client is in tests/test_faults.py.
"""

from __future__ import annotations

import http.server
import itertools
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import grpc
import pytest
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

from client.recommender_client import (
    InvalidRequestError,
    RecommenderClient,
    RequestTimeoutError,
    RetryPolicy,
    ServerUnavailableError,
    classify,
)
from serving.launcher import TritonServer
from tests.conftest import free_port

PROTOCOLS = ("grpc", "http")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield int(server.getsockname()[1])
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_listening_is_retried_then_raised_as_unavailable(protocol: str) -> None:
    client = RecommenderClient(f"127.0.0.1:{free_port()}", protocol, retries=3, backoff_s=0.01)  # type: ignore[arg-type]
    with pytest.raises(ServerUnavailableError) as info:
        client.recommend(1, 5)
    assert info.value.code == "UNAVAILABLE"
    assert info.value.attempts == 4
    assert "after 4 attempts [UNAVAILABLE]" in str(info.value)


@pytest.fixture
def stalled_grpc_port() -> Iterator[int]:
    """A real gRPC server whose every call hangs (HTTP/2 is up, no answer comes)."""
    release = threading.Event()

    class Stall(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(lambda request, context: release.wait(30))

    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[Stall()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    release.set()
    server.stop(grace=None)


def test_a_stalled_grpc_server_times_out_without_retries(stalled_grpc_port: int) -> None:
    client = RecommenderClient(f"127.0.0.1:{stalled_grpc_port}", "grpc", timeout_s=0.5, retries=5)
    with pytest.raises(RequestTimeoutError) as info:
        client.recommend(1, 5)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert info.value.attempts == 1  # the server may still be working on it: not resent


def test_a_silent_http_server_times_out_without_retries(silent_port: int) -> None:
    client = RecommenderClient(f"127.0.0.1:{silent_port}", "http", timeout_s=0.5, retries=5)
    with pytest.raises(RequestTimeoutError) as info:
        client.recommend(1, 5)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert info.value.attempts == 1  # the server may still be working on it: not resent


def test_retry_deadline_bounds_the_retries() -> None:
    client = RecommenderClient(
        f"127.0.0.1:{free_port()}", "grpc", retries=1000, backoff_s=0.05, retry_deadline_s=0.5
    )
    with pytest.raises(ServerUnavailableError) as info:
        client.recommend(1, 5)
    assert 1 < info.value.attempts < 1000


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(retries=10, backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(0)
    delays = [policy.delay(attempt, rng) for attempt in range(8)]
    assert all(0.05 <= d <= 0.1 * 2**n for n, d in enumerate(delays))
    assert all(d <= 1.0 for d in delays)
    assert delays[-1] >= 0.5  # capped, with jitter in [0.5, 1] of the cap


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_invalid_request_is_not_retried(protocol: str, triton: TritonServer) -> None:
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    with RecommenderClient(url, protocol, retries=5) as client:  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="top_k must be between") as info:
            client.recommend(1, 0)
        assert (info.value.code, info.value.attempts) == ("INVALID_ARGUMENT", 1)
        assert len(client.recommend(1, 3).item_ids) == 3


@pytest.mark.server
def test_an_unknown_model_is_not_found_and_not_retried(triton: TritonServer) -> None:
    client = RecommenderClient(triton.grpc_url, "grpc", model_name="no_such_model", retries=5)
    with pytest.raises(Exception) as info:
        client.recommend(1, 3)
    assert getattr(info.value, "code", None) == "NOT_FOUND"
    assert getattr(info.value, "attempts", None) == 1


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (InferenceServerException("x", status="StatusCode.UNAVAILABLE"), "UNAVAILABLE", True),
        (InferenceServerException("x", status="503"), "UNAVAILABLE", True),
        # Triton's answer for a known model while it loads or unloads (server restarting).
        (
            InferenceServerException(
                "Request for unknown model: 'recommender' has no available versions",
                status="StatusCode.NOT_FOUND",
            ),
            "UNAVAILABLE",
            True,
        ),
        (
            InferenceServerException("Request for unknown model: 'x' is not found", status="404"),
            "NOT_FOUND",
            False,
        ),
        (InferenceServerException("bad", status="400"), "INVALID_ARGUMENT", False),
        (InferenceServerException("boom", status="StatusCode.INTERNAL"), "INTERNAL", False),
        (
            InferenceServerException("slow", status="StatusCode.DEADLINE_EXCEEDED"),
            "DEADLINE_EXCEEDED",
            False,
        ),  # fmt: skip
        (ConnectionRefusedError(111, "refused"), "UNAVAILABLE", True),
        (ConnectionResetError(104, "reset"), "UNAVAILABLE", True),
        (HTTPConnectionClosed("connection closed."), "UNAVAILABLE", True),
        (TimeoutError("timed out"), "DEADLINE_EXCEEDED", False),
    ],
    ids=lambda value: value if isinstance(value, str | bool) else type(value).__name__,
)
def test_failures_map_onto_one_status_vocabulary(
    exc: BaseException, code: str, retryable: bool
) -> None:
    failure = classify(exc)
    assert failure is not None
    assert (failure.code, failure.retryable) == (code, retryable)


def test_programming_errors_are_not_swallowed() -> None:
    assert classify(ValueError("not a call failure")) is None


def test_cli_reports_an_unreachable_server_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client.cli", "--url", f"127.0.0.1:{free_port()}",
         "--retries", "1", "recommend", "--user-id", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "after 2 attempts [UNAVAILABLE]" in result.stderr


# --- backoff on overload refusals -----------------------------------------------------------

OVERLOADED = "in ensemble 'recommender', Exceeds maximum queue size"
BACKOFF_S = 0.05
RETRIES = 4


def check_backoff(times: list[float]) -> None:
    """Gaps between attempts: at least half the nominal backoff (jitter is a factor in
    [0.5, 1]), growing, and at least one below nominal (that is the jitter: sleeping and
    sending only ever add time)."""
    assert len(times) == RETRIES + 1, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    nominal = [BACKOFF_S * 2**n for n in range(RETRIES)]
    assert all(gap >= 0.5 * n - 0.005 for gap, n in zip(gaps, nominal, strict=True)), gaps
    assert gaps[-1] > 2 * gaps[0], gaps
    assert any(gap < n for gap, n in zip(gaps, nominal, strict=True)), (gaps, "no jitter")


class _Overloaded(http.server.BaseHTTPRequestHandler):
    """Answers every POST as Triton's queue policy does under overload (or with `code`)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Triton's HTTP endpoint
    code = 503
    seen: ClassVar[list[tuple[float, int]]] = []  # (time, client port) per request

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((time.monotonic(), self.client_address[1]))
        data = json.dumps({"error": OVERLOADED}).encode()
        self.send_response(self.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("code", [503, 429])
def test_http_overload_refusals_are_retried_with_growing_jittered_backoff(code: int) -> None:
    handler = type("Handler", (_Overloaded,), {"code": code, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"127.0.0.1:{server.server_address[1]}"
        client = RecommenderClient(url, "http", retries=RETRIES, backoff_s=BACKOFF_S)
        with client, pytest.raises(ServerUnavailableError, match="Exceeds maximum queue size"):
            client.recommend(1, 5)
    finally:
        server.shutdown()
        server.server_close()
    check_backoff([t for t, _ in handler.seen])
    # The server answered: the client kept its connection instead of adding handshakes.
    assert len({port for _, port in handler.seen}) == 1


def test_grpc_overload_refusals_are_retried_with_growing_jittered_backoff() -> None:
    seen: list[float] = []

    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(time.monotonic())
        context.abort(grpc.StatusCode.UNAVAILABLE, OVERLOADED)
        return b""

    class Refuse(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(refuse)

    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[Refuse()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = RecommenderClient(
            f"127.0.0.1:{port}", "grpc", retries=RETRIES, backoff_s=BACKOFF_S
        )
        with pytest.raises(ServerUnavailableError, match="Exceeds maximum queue size") as info:
            client.recommend(1, 5)
        assert info.value.attempts == RETRIES + 1
    finally:
        server.stop(grace=None)
    check_backoff(seen)


def test_overload_refusals_keep_the_connection_and_shutdown_drops_it() -> None:
    overloaded = classify(InferenceServerException(OVERLOADED, status="StatusCode.UNAVAILABLE"))
    timed_out = classify(InferenceServerException("Request timeout expired", status="503"))
    stopping = classify(InferenceServerException("Server is stopping", status="503"))
    assert overloaded is not None and timed_out is not None and stopping is not None
    assert overloaded.retryable and timed_out.retryable and stopping.retryable
    assert not overloaded.reconnect and not timed_out.reconnect
    assert stopping.reconnect
