"""What a user would build instead of the ensemble: one FastAPI service, same pipeline.

    python -m perf_analyzer.fastapi_baseline --repository model_repository --port 8100

Each request runs the same stages in-process (serving/stages/chain.py) for one user; no
cross-request batching. Served by uvicorn with one worker per core, the usual set-up, on a
listening socket that keeps TCP_NODELAY (see `tcp_listener`).
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import faiss
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from uvicorn.supervisors import Multiprocess

from recsys.settings import PROJECT_ROOT, load_settings
from serving.stages.chain import InProcessRecommender


class RecommendRequest(BaseModel):
    user_id: int
    top_k: int = Field(10, ge=1)
    exclude_item_ids: list[int] = []
    features: dict[str, str | float | int] = {}


class RecommendResponse(BaseModel):
    item_ids: list[int]
    scores: list[float]


def create_app(repository: Path, version: int) -> FastAPI:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    pipeline = InProcessRecommender(repository, version, load_settings().serving)
    app = FastAPI(title="recommender baseline")

    @app.post("/recommend")
    def recommend(request: RecommendRequest) -> RecommendResponse:
        overrides = {name: np.array([value]) for name, value in request.features.items()}
        try:
            result = pipeline.recommend(
                np.array([request.user_id]), request.top_k,
                [np.array(request.exclude_item_ids, dtype=np.int64)], overrides,
            )[0]  # fmt: skip
        except (ValueError, KeyError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return RecommendResponse(item_ids=result.item_ids.tolist(), scores=result.scores.tolist())

    return app


def app_from_environment() -> FastAPI:
    """uvicorn worker entry point (workers re-import the app by name)."""
    return create_app(Path(os.environ["RECSYS_BASELINE_REPOSITORY"]),
                      int(os.environ.get("RECSYS_BASELINE_VERSION", "1")))  # fmt: skip


def tcp_listener(config: uvicorn.Config) -> socket.socket:
    """uvicorn's bound listening socket, re-wrapped with proto IPPROTO_TCP.

    With --workers > 1 uvicorn binds the socket itself and leaves proto 0; accepted sockets
    inherit it, and asyncio turns TCP_NODELAY on only for proto == IPPROTO_TCP. Nagle's
    algorithm then holds every keep-alive answer's body for the client's delayed ACK: a flat
    ~40 ms per request (Kludex/uvicorn#3149, open). Measured here with wrk at concurrency 1:
    p50 48 ms with uvicorn's own multi-worker socket, 2.3 ms with one worker."""
    bound = config.bind_socket()
    return socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    os.environ["RECSYS_BASELINE_REPOSITORY"] = str(args.repository.resolve())
    os.environ["RECSYS_BASELINE_VERSION"] = str(args.version)
    config = uvicorn.Config(
        "perf_analyzer.fastapi_baseline:app_from_environment",
        factory=True, host=args.host, port=args.port, workers=args.workers, log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, target=server.run, sockets=[tcp_listener(config)]).run()
    else:
        server.run()  # uvicorn binds host:port through asyncio, which keeps TCP_NODELAY
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
