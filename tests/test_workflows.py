from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.datagen import SplitData, generate, split
from recsys.settings import DataSettings, WorkflowSettings
from workflows.features import (
    NULL_INDEX,
    OOV_INDEX,
    FittedWorkflows,
    fit_workflows,
    transform,
    transform_dataset,
)

DATA = split(generate(DataSettings(num_users=300, num_items=150, impressions_per_user=10)), 0.2)
SETTINGS = WorkflowSettings()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> FittedWorkflows:
    return fit_workflows(DATA, SETTINGS, tmp_path_factory.mktemp("stats"))


def test_workflows_fit_on_training_rows_only(tmp_path: Path) -> None:
    held_out = DATA.users["user_id"].head(5).tolist()
    train_only = SplitData(
        DATA.users, DATA.items, DATA.train[~DATA.train["user_id"].isin(held_out)], DATA.valid
    )
    fitted = fit_workflows(train_only, SETTINGS, tmp_path)
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
            "zipcode": ["00001"],
        }
    )
    both = pd.concat([DATA.users.head(1), frame], ignore_index=True)
    out = transform(fitted.user, both).iloc[1]
    assert out["user_id"] == OOV_INDEX
    assert out["country"] == NULL_INDEX
    assert out["device"] == OOV_INDEX
    assert out["age"] == 0.0  # missing age: the training mean, normalised
    assert 0 <= out["zipcode"] < SETTINGS.hash_buckets_zipcode


def test_rare_brands_are_frequency_capped(tmp_path: Path) -> None:
    threshold = 40
    capped = fit_workflows(DATA, WorkflowSettings(brand_freq_threshold=threshold), tmp_path)
    out = transform(capped.item, DATA.items)["brand"].to_numpy()
    brand_of_item = DATA.items.set_index("item_id")["brand"]
    counts = DATA.train["item_id"].map(brand_of_item).value_counts()
    counts = DATA.items["brand"].map(counts).fillna(0).to_numpy()
    assert (counts < threshold).any() and (counts >= threshold).any()
    assert (out[counts < threshold] == OOV_INDEX).all()
    assert (out[counts >= threshold] > OOV_INDEX).all()


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
        distributed = fit_workflows(DATA, SETTINGS, tmp_path, client=client, npartitions=2)
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
