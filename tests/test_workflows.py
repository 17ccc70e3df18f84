from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datagen import SplitData, generate, split
from recsys.contract import NULL_INDEX, OOV_INDEX
from recsys.schema import load_schema
from recsys.settings import DataSettings
from workflows.fitted import (
    FittedWorkflows,
    fit_workflows,
    spec_from_workflow,
    stack_features,
    transform,
    transform_dataset,
)

SCHEMA = load_schema("synthetic")
DATA = split(
    generate(SCHEMA, DataSettings(num_users=300, num_items=150, impressions_per_user=10)), 0.2
)
MOVIELENS = load_schema("movielens")
MOVIELENS_DATA = split(
    generate(MOVIELENS, DataSettings(num_users=200, num_items=120, impressions_per_user=10)), 0.2
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> FittedWorkflows:
    return fit_workflows(DATA, SCHEMA, tmp_path_factory.mktemp("stats"))


def test_workflows_fit_on_training_rows_only(tmp_path: Path) -> None:
    held_out = DATA.users["user_id"].head(5).tolist()
    train_only = SplitData(
        DATA.users, DATA.items, DATA.train[~DATA.train["user_id"].isin(held_out)], DATA.valid
    )
    fitted = fit_workflows(train_only, SCHEMA, tmp_path)
    out = transform(fitted.user, DATA.users.head(10))
    assert (out["user_id"].iloc[:5] == OOV_INDEX).all()  # not in training: out of vocabulary
    assert (out["user_id"].iloc[5:] > OOV_INDEX).all()


def test_nulls_and_unknown_values_get_reserved_indices(fitted: FittedWorkflows) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [-5],
            "age": [np.nan],
            "country": [None],
            "device": ["toaster"],
            "zipcode": ["zipcode_00001"],
        }
    )
    both = pd.concat([DATA.users.head(1), frame], ignore_index=True)
    out = transform(fitted.user, both).iloc[1]
    assert out["user_id"] == OOV_INDEX
    assert out["country"] == NULL_INDEX
    assert out["device"] == OOV_INDEX
    assert out["age"] == 0.0  # missing age: the training mean, normalised
    assert 0 <= out["zipcode"] < SCHEMA.users.features["zipcode"].buckets


def test_rare_brands_are_frequency_capped(tmp_path: Path) -> None:
    threshold = 40
    brand = SCHEMA.items.features["brand"].model_copy(update={"min_frequency": threshold})
    items = SCHEMA.items.model_copy(update={"features": {**SCHEMA.items.features, "brand": brand}})
    capped = fit_workflows(DATA, SCHEMA.model_copy(update={"items": items}), tmp_path)
    out = transform(capped.item, DATA.items)["brand"].to_numpy()
    brand_of_item = DATA.items.set_index("item_id")["brand"]
    counts = DATA.train["item_id"].map(brand_of_item).value_counts()
    counts = DATA.items["brand"].map(counts).fillna(0).to_numpy()
    missing = DATA.items["brand"].isna().to_numpy()
    assert (counts < threshold).any() and (counts >= threshold).any()
    assert (out[(counts < threshold) & ~missing] == OOV_INDEX).all()
    assert (out[(counts >= threshold) & ~missing] > OOV_INDEX).all()


def test_saved_workflows_load_unchanged(fitted: FittedWorkflows, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    loaded = FittedWorkflows.load(tmp_path)
    pd.testing.assert_frame_equal(
        transform(loaded.user, DATA.users), transform(fitted.user, DATA.users)
    )
    pd.testing.assert_frame_equal(
        transform(loaded.item, DATA.items), transform(fitted.item, DATA.items)
    )
    assert loaded.user_spec == fitted.user_spec


def test_dask_cluster_fit_and_transform_match_single_process(
    fitted: FittedWorkflows, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        distributed = fit_workflows(DATA, SCHEMA, tmp_path, client=client, npartitions=2)
        for single, dist, frame in (
            (fitted.user, distributed.user, DATA.users),
            (fitted.item, distributed.item, DATA.items),
        ):
            expected = transform_dataset(single, frame)
            got = transform_dataset(dist, frame, npartitions=2)
            pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-5, atol=1e-5)


def test_hashed_zipcode_depends_on_the_value_not_the_row_position(
    fitted: FittedWorkflows,
) -> None:
    users = DATA.users.head(6)
    together = transform(fitted.user, users)["zipcode"].tolist()
    alone = [
        transform(fitted.user, users.iloc[[i]].reset_index(drop=True))["zipcode"].iloc[0]
        for i in range(len(users))
    ]
    reversed_order = transform(fitted.user, users.iloc[::-1].reset_index(drop=True))
    assert together == alone
    assert reversed_order["zipcode"].tolist()[::-1] == together


def test_every_feature_kind_gets_its_chain_and_tags(tmp_path: Path) -> None:
    """MovieLens: categorical, hashed, continuous (users) and multi-hot genres (items)."""
    fitted = fit_workflows(MOVIELENS_DATA, MOVIELENS, tmp_path)
    user, item = spec_from_workflow(fitted.user), spec_from_workflow(fitted.item)
    assert user.categorical == ("user_id", "gender", "occupation", "zip_code")
    assert user.continuous == ("age",)
    # HashBucket declares its domain as 0..buckets inclusive: one spare embedding row.
    assert user.cardinalities[3] == MOVIELENS.users.features["zip_code"].buckets + 1
    assert item.categorical == ("item_id", "genres")
    assert item.widths == (1, MOVIELENS.items.features["genres"].max_tokens)
    assert item.continuous == ("year",)
    categorical, _ = stack_features(transform(fitted.item, MOVIELENS_DATA.items), item)
    tokens = categorical[:, 1:]
    lengths = MOVIELENS_DATA.items["genres"].map(len).clip(upper=item.widths[1]).to_numpy()
    assert ((tokens > 0).sum(axis=1) == lengths).all()  # padded with 0 after the tokens
    assert (tokens[tokens > 0] > OOV_INDEX).all()


def test_a_multi_hot_list_longer_than_max_tokens_is_truncated(tmp_path: Path) -> None:
    fitted = fit_workflows(MOVIELENS_DATA, MOVIELENS, tmp_path)
    spec = spec_from_workflow(fitted.item)
    known = MOVIELENS_DATA.items["genres"].explode().dropna().unique().tolist()
    row = MOVIELENS_DATA.items.head(1).copy()
    row.at[row.index[0], "genres"] = (known * 4)[:20]
    categorical, _ = stack_features(transform(fitted.item, row), spec)
    assert categorical.shape == (1, 1 + spec.widths[1])
    assert (categorical[0, 1:] > OOV_INDEX).all()
