"""Each shipped schema end to end: data in its own layout -> build -> a real tritonserver
-> gRPC and HTTP answers equal to the in-process chain, overrides typed from the schema.

The synthetic schema is the session's default (tests/test_server.py); here: MovieLens read
from a fixture directory in GroupLens' exact ml-100k layout (genres multi-hot, zip codes
hashed, label rating >= 4) and Ali-CCP from merlin's aliccp-raw generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from client.recommender_client import RecommendationRequest, RecommenderClient
from datagen import generate, write_layout
from pipeline.build import build_artifacts
from recsys.contract import NULL_INDEX, OOV_INDEX, TRITON_DTYPES
from recsys.schema import FeatureSchema, load_schema
from recsys.settings import Settings
from serving.launcher import TritonServer
from serving.repository import build_model_repository
from serving.stages.chain import InProcessRecommender
from tests.conftest import free_port

pytestmark = pytest.mark.server
TOP_K = 5


@dataclass(frozen=True)
class Served:
    schema: FeatureSchema
    server: TritonServer
    chain: InProcessRecommender


def small(settings: Settings, schema: str) -> Settings:
    data = settings.data.model_copy(
        update={"num_users": 600, "num_items": 400, "impressions_per_user": 30}
    )
    training = settings.training.model_copy(update={"retrieval_epochs": 2, "ranking_epochs": 1})
    # Own ports: the session's server may be running on the default test ones.
    server = settings.server.model_copy(
        update={"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    )
    return settings.model_copy(
        update={"feature_schema": schema, "data": data, "training": training, "server": server}
    )


@pytest.fixture(scope="module", params=["movielens", "aliccp"])
def served(
    request: pytest.FixtureRequest,
    test_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    name = request.param
    settings = small(test_settings, name)
    schema = load_schema(name)
    root = tmp_path_factory.mktemp(name)
    data_dir = None
    if name == "movielens":
        # The data as GroupLens publishes it (u.data, u.user, u.item + u.genre), read back.
        data_dir = root / "ml-100k"
        write_layout(generate(schema, settings.data), schema, data_dir, release="ml-100k")
        assert sorted(p.name for p in data_dir.iterdir()) == ["u.data", "u.genre", "u.item",
                                                               "u.user"]  # fmt: skip
    build_artifacts(settings, root / "artifacts", data_dir)
    build_model_repository(root / "artifacts", root / "repository", settings.serving, 1)
    chain = InProcessRecommender(root / "repository", 1, settings.serving)
    with TritonServer(root / "repository", settings.server, root / "tritonserver.log") as server:
        yield Served(schema, server, chain)


def some_users(served: Served) -> list[int]:
    ids = served.chain.user_features.ids
    return [*ids[:: max(1, len(ids) // 5)][:5].tolist(), int(ids.max()) + 1]  # + an unknown id


def override_values(served: Served) -> dict[str, object]:
    """A stored value of every overridable scalar feature (from the served user table)."""
    stage = served.chain.user_features
    values: dict[str, object] = {}
    for name, feature in served.schema.user_overrides():
        column = stage.columns[name]
        known = [v for v in column if v is not None and v == v and not isinstance(v, list)]
        if known and feature.kind != "multi_hot":
            values[name] = known[len(known) // 2]
    return values


def test_the_request_contract_is_the_schema(served: Served) -> None:
    client = RecommenderClient(served.server.grpc_url)
    inputs = client.feature_inputs()
    expected = {n: TRITON_DTYPES[f.value_type] for n, f in served.schema.user_overrides()}
    assert {n: i.datatype for n, i in inputs.items()} == expected


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_answers_equal_the_in_process_chain(served: Served, protocol: str) -> None:
    url = served.server.grpc_url if protocol == "grpc" else served.server.http_url
    client = RecommenderClient(url, protocol)  # type: ignore[arg-type]
    users = some_users(served)
    got = client.recommend_batch([RecommendationRequest(u, TOP_K) for u in users])
    want = served.chain.recommend(np.array(users), TOP_K)
    for g, w in zip(got, want, strict=True):
        assert g.item_ids == w.item_ids.tolist()
        np.testing.assert_allclose(g.scores, w.scores, rtol=1e-5, atol=1e-6)


def test_overrides_of_every_feature_kind_equal_the_in_process_chain(served: Served) -> None:
    client = RecommenderClient(served.server.grpc_url)
    features = override_values(served)
    assert features, "the schema declares overridable features"
    user = some_users(served)[-1]  # unknown: the overrides are all it has
    got = client.recommend(user, TOP_K, features=features)  # type: ignore[arg-type]
    overrides = {name: np.array([value]) for name, value in features.items()}
    want = served.chain.recommend(np.array([user]), TOP_K, overrides=overrides)[0]
    assert got.item_ids == want.item_ids.tolist()


def test_the_served_feature_transform_equals_nvtabular(served: Served) -> None:
    stage = served.chain.user_features
    *known, unknown = some_users(served)
    raw = stage.raw_columns(np.array(known))
    compiled = stage.transform(raw)
    reference = stage.transform_nvtabular(raw)
    np.testing.assert_array_equal(compiled[0], reference[0])
    np.testing.assert_allclose(compiled[1], reference[1], rtol=1e-5, atol=1e-6)
    # An unknown user: NVTabular 23.08 cannot encode a null in an integer column (it casts
    # the column to int first), so the compiled transform is checked against the rule
    # instead: id -> out-of-vocabulary, every missing categorical feature -> null index.
    categorical, _ = stage.transform(stage.raw_columns(np.array([unknown])))
    spec = stage.spec
    for name, width, start in zip(spec.categorical, spec.widths, spec.offsets(), strict=True):
        feature = served.schema.users.features.get(name)
        if name == served.schema.users.id:
            assert categorical[0, start] == OOV_INDEX
        elif feature is not None and feature.kind == "categorical" and width == 1:
            assert categorical[0, start] == NULL_INDEX, name
