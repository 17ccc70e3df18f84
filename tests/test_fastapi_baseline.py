"""The FastAPI baseline's listening socket: accepted connections get TCP_NODELAY.

Without it every keep-alive answer waits ~40 ms for the client's delayed ACK (Nagle), and
the baseline looks 10-20x slower than it is (perf_analyzer/fastapi_baseline.py). The socket
option is read on the server side of a real accepted connection, under asyncio as uvicorn
serves it; no timing."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from perf_analyzer.fastapi_baseline import tcp_listener
from tests.conftest import free_port


def accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of the server side of one connection asyncio accepts on `listener`."""
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def serve_one() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        host, port = listener.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(serve_one())
    assert seen, "no connection was accepted"
    return seen[0]


def config() -> uvicorn.Config:
    return uvicorn.Config("perf_analyzer.fastapi_baseline:app_from_environment",
                          factory=True, host="127.0.0.1", port=free_port(), workers=2)  # fmt: skip


def test_the_baselines_listener_keeps_tcp_nodelay_with_several_workers() -> None:
    listener = tcp_listener(config())
    assert listener.proto == socket.IPPROTO_TCP
    assert accepted_nodelay(listener) == 1


@pytest.mark.xfail(
    strict=True,
    reason="uvicorn's multi-worker socket has proto 0, so asyncio leaves TCP_NODELAY off "
    "(Kludex/uvicorn#3149); when fixed, drop fastapi_baseline.tcp_listener",
)
def test_uvicorns_own_multi_worker_socket_keeps_tcp_nodelay() -> None:
    assert accepted_nodelay(config().bind_socket()) == 1
