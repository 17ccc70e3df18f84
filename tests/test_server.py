"""Against the real tritonserver: every config loads, answers equal the in-process
pipeline, the served feature transform equals NVTabular's, gRPC equals HTTP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client.recommender_client import (
    RecommendationRequest,
    RecommenderClient,
    RecommenderClientError,
)
from recsys.contract import MODEL_LOAD_ORDER
from serving.launcher import TritonServer
from serving.stages.chain import InProcessRecommender
from tests.conftest import TrainedSet
from workflows.fitted import FittedWorkflows, stack_features, transform_dataset

pytestmark = pytest.mark.server
TOP_K = 10


@pytest.fixture(scope="module")
def grpc(triton: TritonServer) -> RecommenderClient:
    return RecommenderClient(triton.grpc_url, "grpc")


@pytest.fixture(scope="module")
def http(triton: TritonServer) -> RecommenderClient:
    return RecommenderClient(triton.http_url, "http")


def sample_users(trained: TrainedSet, n: int = 8) -> list[int]:
    ids = trained.data.valid["user_id"].drop_duplicates().head(n - 1).tolist()
    return [*ids, 7]  # 7 is not a known user: served through the OOV path


def test_triton_loads_every_generated_model(triton: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    for name in MODEL_LOAD_ORDER:
        assert client.is_model_ready(name, "1"), name
    assert client.get_model_metadata("recommender")["platform"] == "ensemble"


def test_served_top_k_equals_the_in_process_pipeline(
    trained: TrainedSet, grpc: RecommenderClient, in_process: InProcessRecommender
) -> None:
    users = sample_users(trained)
    served = grpc.recommend_batch([RecommendationRequest(u, TOP_K) for u in users])
    expected = in_process.recommend(np.array(users), TOP_K)
    for got, want in zip(served, expected, strict=True):
        assert got.item_ids == want.item_ids.tolist()
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
        assert got.model_version == 1
        # Scores are the ranking model's P(like); the order is by expected positives
        # (P(like) x the retrieval score's odds of engaging), so they need not descend.
        assert all(0.0 < score < 1.0 for score in got.scores)


def test_one_user_per_request_equals_batched(trained: TrainedSet, grpc: RecommenderClient) -> None:
    users = sample_users(trained, 4)
    batched = grpc.recommend_batch([RecommendationRequest(u, TOP_K) for u in users])
    single = [grpc.recommend(u, TOP_K) for u in users]
    assert [r.item_ids for r in batched] == [r.item_ids for r in single]


def test_grpc_and_http_answer_identically(
    trained: TrainedSet, grpc: RecommenderClient, http: RecommenderClient
) -> None:
    for user in sample_users(trained, 4):
        a, b = (
            grpc.recommend(user, TOP_K, exclude_item_ids=[1, 2]),
            http.recommend(user, TOP_K, exclude_item_ids=[1, 2]),
        )
        assert a.item_ids == b.item_ids
        np.testing.assert_array_equal(a.scores, b.scores)


def test_excluded_items_are_dropped_and_the_list_refilled(
    trained: TrainedSet, grpc: RecommenderClient, in_process: InProcessRecommender
) -> None:
    user = sample_users(trained, 1)[0]
    first = grpc.recommend(user, TOP_K)
    excluded = first.item_ids[:3]
    again = grpc.recommend(user, TOP_K, exclude_item_ids=excluded)
    assert not set(excluded) & set(again.item_ids)
    assert len(again.item_ids) == TOP_K
    # Excluded before retrieval: new candidates may come in, the kept ones keep their order.
    kept = [item for item in again.item_ids if item in set(first.item_ids)]
    assert kept == first.item_ids[3:]
    want = in_process.recommend(np.array([user]), TOP_K, [np.array(excluded)])[0]
    assert again.item_ids == want.item_ids.tolist()


def test_raw_feature_overrides_change_the_answer_like_in_process(
    trained: TrainedSet, grpc: RecommenderClient, in_process: InProcessRecommender
) -> None:
    user = sample_users(trained, 1)[0]
    features = {"age": 71.0, "country": "country_02", "device": "web", "zipcode": "00042"}
    got = grpc.recommend(user, TOP_K, features=features)
    overrides = {
        k: np.array([v], dtype=np.float32 if k == "age" else object) for k, v in features.items()
    }
    want = in_process.recommend(np.array([user]), TOP_K, overrides=overrides)[0]
    assert got.item_ids == want.item_ids.tolist()
    assert got.item_ids != grpc.recommend(user, TOP_K).item_ids


def test_served_feature_transform_equals_offline_workflow(
    trained: TrainedSet, triton: TritonServer
) -> None:
    workflows = FittedWorkflows.load(trained.artifacts / "workflows")
    users = trained.data.users.head(16)
    expected_cat, expected_cont = stack_features(
        transform_dataset(workflows.user, users), workflows.user_spec
    )
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    user_id = grpcclient.InferInput("user_id", [len(users), 1], "INT64")
    user_id.set_data_from_numpy(users[["user_id"]].to_numpy(np.int64))
    result = client.infer("user_features", [user_id])
    np.testing.assert_array_equal(result.as_numpy("user_categorical"), expected_cat)
    np.testing.assert_allclose(
        result.as_numpy("user_continuous"), expected_cont, rtol=1e-6, atol=1e-6
    )


def test_top_k_out_of_range_is_invalid_argument_and_server_keeps_serving(
    trained: TrainedSet, grpc: RecommenderClient
) -> None:
    user = sample_users(trained, 1)[0]
    for bad in (0, trained.settings.serving.num_candidates + 1):
        with pytest.raises(RecommenderClientError, match="top_k must be between 1 and") as info:
            grpc.recommend(user, bad)
        assert info.value.status == "StatusCode.INVALID_ARGUMENT"
    assert len(grpc.recommend(user, 3).item_ids) == 3


def test_nan_age_is_refused_naming_the_input(trained: TrainedSet, http: RecommenderClient) -> None:
    with pytest.raises(RecommenderClientError, match="input 'age' must be finite"):
        http.recommend(sample_users(trained, 1)[0], 5, features={"age": float("nan")})


def test_temperature_sampling_returns_distinct_candidates(
    trained: TrainedSet, grpc: RecommenderClient
) -> None:
    user = sample_users(trained, 1)[0]
    sampled = grpc.recommend(user, TOP_K, temperature=1.0)
    assert len(set(sampled.item_ids)) == TOP_K
    catalog = set(pd.read_parquet(trained.artifacts / "data" / "items.parquet")["item_id"])
    assert set(sampled.item_ids) <= catalog


def test_model_repository_api_needs_the_admin_key(triton: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    with pytest.raises(InferenceServerException, match="(?i)restricted|unauthori|permission"):
        client.unload_model("recommender")
    assert client.is_model_ready("recommender")
    keyed = client.get_model_repository_index(headers={"triton-admin-key": triton.admin_key})
    assert {m["name"] for m in keyed} >= set(MODEL_LOAD_ORDER)


def test_items_the_user_already_consumed_are_filtered_unless_asked_for(
    trained: TrainedSet, grpc: RecommenderClient, http: RecommenderClient,
    in_process: InProcessRecommender,
) -> None:  # fmt: skip
    train = trained.data.train
    # The user with the most training interactions: the filter has the most to remove.
    user = int(train["user_id"].value_counts().index[0])
    history_length = trained.settings.serving.history_length
    consumed = set(train[train["user_id"] == user].sort_values("timestamp")["item_id"]
                   .tail(history_length))  # fmt: skip
    top_k = 50
    filtered = grpc.recommend(user, top_k)
    assert len(filtered.item_ids) == top_k  # never shorter while the catalog has items
    assert not consumed & set(filtered.item_ids)
    assert filtered.item_ids == in_process.recommend(np.array([user]), top_k)[0].item_ids.tolist()
    unfiltered = http.recommend(user, top_k, filter_seen=False)
    want = in_process.recommend(np.array([user]), top_k, filter_seen=False)[0]
    assert unfiltered.item_ids == want.item_ids.tolist()
    assert consumed & set(unfiltered.item_ids), "the model ranks some consumed items high"


def test_filters_that_remove_many_candidates_still_fill_top_k(
    trained: TrainedSet, grpc: RecommenderClient, in_process: InProcessRecommender
) -> None:
    """Exclusions plus consumed items beyond the candidates retrieved per request: more
    neighbours are searched, so the answer keeps top_k items."""
    user = int(trained.data.train["user_id"].value_counts().index[0])
    candidates = trained.settings.serving.num_candidates
    first = grpc.recommend(user, candidates)
    assert len(first.item_ids) == candidates
    again = grpc.recommend(user, TOP_K, exclude_item_ids=first.item_ids)
    assert len(again.item_ids) == TOP_K and not set(again.item_ids) & set(first.item_ids)
    want = in_process.recommend(np.array([user]), TOP_K, [np.array(first.item_ids)])[0]
    assert again.item_ids == want.item_ids.tolist()


def test_session_items_personalise_an_unknown_user_and_are_not_recommended(
    trained: TrainedSet, grpc: RecommenderClient, http: RecommenderClient,
    in_process: InProcessRecommender,
) -> None:  # fmt: skip
    """history_item_ids: a user the store does not know, sending what it just consumed,
    gets another answer than with nothing, without those items, equal in-process."""
    unknown = int(trained.data.users["user_id"].max()) + 1
    train = trained.data.train
    # A known user's recent items, sent as the unknown user's session.
    donor = int(train["user_id"].value_counts().index[0])
    session = train[train["user_id"] == donor].sort_values("timestamp")["item_id"].tail(8)
    session = [int(i) for i in session]
    top_k = 20
    cold = grpc.recommend(unknown, top_k)
    warm = grpc.recommend(unknown, top_k, history_item_ids=session)
    assert warm.item_ids != cold.item_ids
    assert len(warm.item_ids) == top_k and not set(session) & set(warm.item_ids)
    want = in_process.recommend(np.array([unknown]), top_k, history_item_ids=[np.array(session)])
    assert warm.item_ids == want[0].item_ids.tolist()
    assert http.recommend(unknown, top_k, history_item_ids=session).item_ids == warm.item_ids
    # Asked to keep consumed items, the session items may come back (the filter is theirs).
    kept = grpc.recommend(unknown, top_k, filter_seen=False, history_item_ids=session)
    assert (
        kept.item_ids
        == in_process.recommend(
            np.array([unknown]), top_k, filter_seen=False, history_item_ids=[np.array(session)]
        )[0].item_ids.tolist()
    )


def test_too_many_session_items_are_refused_naming_the_input(
    trained: TrainedSet, grpc: RecommenderClient
) -> None:
    limit = trained.settings.serving.max_history_items
    with pytest.raises(RecommenderClientError, match="history_item_ids"):
        grpc.recommend(1, TOP_K, history_item_ids=list(range(1, limit + 2)))
