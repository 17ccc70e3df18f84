"""The schema-driven generator, the canonical frames and their directory, the time split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datagen import (
    DataFormatError,
    RawData,
    generate,
    read_canonical,
    read_data,
    split,
    write_canonical,
    write_layout,
)
from recsys.contract import LABEL, TIMESTAMP
from recsys.schema import FeatureSchema, load_schema
from recsys.settings import DataSettings

SMALL = DataSettings(num_users=200, num_items=100, impressions_per_user=10)
PLANTED = ("synthetic", "movielens")


def assert_same(a: RawData, b: RawData) -> None:
    for name in ("users", "items", "interactions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def assert_canonical(data: RawData, schema: FeatureSchema) -> None:
    for frame, entity in ((data.users, schema.users), (data.items, schema.items)):
        assert list(frame.columns) == [entity.id, *entity.features]
        assert frame[entity.id].dtype == np.int64
        assert frame[entity.id].is_unique and (frame[entity.id] >= 0).all()
        for name, feature in entity.features.items():
            column = frame[name]
            if feature.kind == "continuous":
                assert column.dtype == np.float32, name
            elif feature.kind == "multi_hot":
                assert all(isinstance(v, list) for v in column), name
                kind = int if feature.value_type == "int64" else str
                assert all(isinstance(t, kind) for v in column for t in v), name
            elif feature.value_type == "int64":
                assert column.dtype == np.int64 or all(
                    v is None or type(v) is int for v in column
                ), name
            else:
                assert column.dtype == object, name
                assert all(v is None or type(v) is str for v in column), name
    interactions = data.interactions
    assert list(interactions.columns) == [schema.users.id, schema.items.id, TIMESTAMP, LABEL]
    assert interactions[TIMESTAMP].dtype == np.int64
    assert interactions[LABEL].dtype == np.int8
    assert set(interactions[LABEL].unique()) <= {0, 1}
    assert interactions[TIMESTAMP].is_monotonic_increasing
    assert interactions[schema.users.id].isin(data.users[schema.users.id]).all()
    assert interactions[schema.items.id].isin(data.items[schema.items.id]).all()


@pytest.fixture(scope="module")
def aliccp() -> tuple[FeatureSchema, RawData]:
    schema = load_schema("aliccp")
    return schema, generate(schema, DataSettings(num_users=20, num_items=10))


@pytest.mark.parametrize("name", PLANTED)
def test_planted_generation_is_canonical_and_deterministic(name: str) -> None:
    schema = load_schema(name)
    a, b = generate(schema, SMALL), generate(schema, SMALL)
    assert_canonical(a, schema)
    assert_same(a, b)
    assert len(a.users) == SMALL.num_users and len(a.items) == SMALL.num_items
    assert len(a.interactions) == SMALL.num_users * SMALL.impressions_per_user
    assert (a.users[schema.users.id] >= 100_000).all()
    assert (a.items[schema.items.id] >= 500_000).all()
    c = generate(schema, SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    assert not a.interactions.equals(c.interactions)


@pytest.mark.parametrize("name", PLANTED)
def test_generate_and_canonical_round_trip(name: str, tmp_path: Path) -> None:
    schema = load_schema(name)
    data = generate(schema, SMALL)
    write_canonical(data, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
    ]
    assert_same(read_canonical(schema, tmp_path / "data"), data)


def test_merlin_generator_is_parsed_as_a_single_table(
    aliccp: tuple[FeatureSchema, RawData], tmp_path: Path
) -> None:
    schema, data = aliccp
    assert_canonical(data, schema)
    assert len(data.interactions) == 20 * 25  # num_users x rows_per_user
    # No timestamp in the schema: the row number in file order.
    assert data.interactions[TIMESTAMP].tolist() == list(range(len(data.interactions)))
    write_canonical(data, tmp_path / "canonical")
    assert_same(read_canonical(schema, tmp_path / "canonical"), data)
    for fmt in ("parquet", "csv"):
        write_layout(data, schema, tmp_path / fmt, fmt=fmt)
        assert (tmp_path / fmt / f"train.{fmt}").exists()
        assert_same(read_data(schema, tmp_path / fmt), data)


def test_value_spelling_and_hints() -> None:
    schema = load_schema("synthetic")
    data = generate(schema, SMALL.model_copy(update={"missing_rate": 0.2}))
    countries = set(data.users["country"].dropna())
    assert countries <= {f"country_{i:02d}" for i in range(12)} and len(countries) > 6
    assert not data.users["country"].isna().any()  # the hint's missing_rate 0
    assert 0.03 < data.users["age"].isna().mean() < 0.2  # the hint's 0.1
    assert data.users["age"].min() >= 0  # kept within the feature's range
    assert (data.items["price"].dropna() > 0).all()  # exponential
    many = generate(schema, SMALL.model_copy(update={"num_items": 1000})).items
    brands = many["brand"].dropna().value_counts()
    assert brands.iloc[0] >= 3 * brands.median()  # Zipf tail
    counts = data.interactions[schema.items.id].value_counts()
    assert counts.iloc[0] > 5 * counts.median()  # popularity skew
    assert 0.1 < data.interactions[LABEL].mean() < 0.9
    movielens = load_schema("movielens")
    assert movielens.users.features["gender"].synthetic.missing_rate is None
    users = generate(movielens, SMALL.model_copy(update={"missing_rate": 0.2})).users
    assert 0.1 < users["gender"].isna().mean() < 0.3  # the settings' default rate
    assert set(users["gender"].dropna()) == {"gender_00", "gender_01"}
    items = generate(movielens, SMALL).items
    lengths = items["genres"].map(len)
    assert set(lengths.unique()) <= {0, 1, 2, 3} and (lengths == 0).mean() < 0.25


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    positive = label == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_planted_structure_carries_signal_beyond_random() -> None:
    """Clicks follow the latent affinity that the side features view: the train click rate
    of a (country, category) cell, beyond its category's, predicts validation clicks; a
    signal-0 feature (device) does not."""
    schema = load_schema("synthetic")
    settings = DataSettings(num_users=800, num_items=300, impressions_per_user=20, seed=3)
    data = split(generate(schema, settings), 0.3)

    def joined(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.merge(data.users, on="user_id").merge(data.items, on="item_id")

    train, valid = joined(data.train), joined(data.valid)
    prior = train[LABEL].mean()
    per_category = valid["category"].map(train.groupby("category")[LABEL].mean()).fillna(prior)
    auc = {}
    for feature in ("country", "device"):
        cells = train.groupby([feature, "category"])[LABEL].mean().rename("cell")
        cell = valid.join(cells, on=[feature, "category"])["cell"].fillna(prior)
        auc[feature] = _auc((cell - per_category).to_numpy(), valid[LABEL].to_numpy())
    item_rate = valid["item_id"].map(train.groupby("item_id")[LABEL].mean()).fillna(prior)
    auc["item"] = _auc(item_rate.to_numpy(), valid[LABEL].to_numpy())
    assert auc["country"] > 0.56, auc
    assert abs(auc["device"] - 0.5) < 0.04, auc
    assert auc["item"] > 0.58, auc


def test_time_split_holds_out_the_latest_interactions() -> None:
    data = split(generate(load_schema("synthetic"), SMALL), 0.2)
    assert data.train[TIMESTAMP].max() <= data.valid[TIMESTAMP].min()
    assert abs(len(data.valid) / (len(data.train) + len(data.valid)) - 0.2) < 0.02
    tiny = RawData(data.users, data.items, data.train.head(1))
    with pytest.raises(DataFormatError, match="left an empty side"):
        split(tiny, 0.2)


def test_leave_last_n_split_holds_out_each_users_latest_interactions() -> None:
    raw = generate(load_schema("synthetic"), SMALL)
    data = split(raw, 0.2, "leave_last_n", last_n=3)
    user = "user_id"
    sizes = raw.interactions.groupby(user).size()
    held = data.valid.groupby(user).size()
    assert (held == 3).all() and set(held.index) == set(sizes[sizes > 3].index)
    latest_train = data.train.groupby(user)[TIMESTAMP].max()
    earliest_valid = data.valid.groupby(user)[TIMESTAMP].min()
    assert (latest_train.loc[earliest_valid.index] <= earliest_valid).all()
    assert len(data.train) + len(data.valid) == len(raw.interactions)
    with pytest.raises(DataFormatError, match="unknown split strategy 'random'"):
        split(raw, 0.2, "random")


def test_write_canonical_replaces_atomically(tmp_path: Path) -> None:
    schema = load_schema("synthetic")
    first = generate(schema, SMALL)
    second = generate(schema, SMALL.model_copy(update={"seed": 99}))
    target = tmp_path / "data"
    write_canonical(first, target)
    write_canonical(second, target)
    assert_same(read_canonical(schema, target), second)
    broken = RawData(
        second.users, second.items.assign(price=[object()] * len(second.items)), second.interactions
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises
        write_canonical(broken, target)
    assert_same(read_canonical(schema, target), second)  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary left behind


def test_read_canonical_refuses_a_missing_file(tmp_path: Path) -> None:
    schema = load_schema("synthetic")
    write_canonical(generate(schema, SMALL), tmp_path / "data")
    (tmp_path / "data" / "items.parquet").unlink()
    with pytest.raises(DataFormatError, match=r"items\.parquet: missing file"):
        read_canonical(schema, tmp_path / "data")
