from pathlib import Path

import pandas as pd
import pytest

from recsys.datagen import DataFormatError, generate, read_raw, split, write_raw
from recsys.settings import DataSettings

SMALL = DataSettings(num_users=200, num_items=100, impressions_per_user=10)


def test_generation_is_deterministic_for_a_seed() -> None:
    a, b = generate(SMALL), generate(SMALL)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    c = generate(SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    assert not a.interactions.equals(c.interactions)


def test_planted_structure_has_skew_missing_values_and_clicks() -> None:
    data = generate(SMALL.model_copy(update={"missing_rate": 0.2}))
    counts = data.interactions["item_id"].value_counts()
    assert counts.iloc[0] > 5 * counts.median()  # popularity skew
    assert 0.1 < data.users["age"].isna().mean() < 0.3
    assert 0.1 < data.interactions["click"].mean() < 0.9


def test_time_split_holds_out_the_latest_interactions() -> None:
    data = split(generate(SMALL), 0.2)
    assert data.train["timestamp"].max() <= data.valid["timestamp"].min()
    assert abs(len(data.valid) / (len(data.train) + len(data.valid)) - 0.2) < 0.02


def test_round_trip_through_the_documented_format_parquet_and_csv(tmp_path: Path) -> None:
    data = generate(SMALL)
    write_raw(data, tmp_path / "parquet")
    back = read_raw(tmp_path / "parquet")
    pd.testing.assert_frame_equal(back.interactions, data.interactions)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for name, frame in (
        ("users", data.users),
        ("items", data.items),
        ("interactions", data.interactions),
    ):
        frame.to_csv(csv_dir / f"{name}.csv", index=False)
    assert len(read_raw(csv_dir).users) == SMALL.num_users


def test_bad_data_is_refused_with_the_file_and_problem(tmp_path: Path) -> None:
    data = generate(SMALL)
    write_raw(data, tmp_path)
    data.items.drop(columns=["brand"]).to_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataFormatError, match=r"items\.parquet lacks column\(s\) \['brand'\]"):
        read_raw(tmp_path)
    write_raw(data, tmp_path)
    bad = data.interactions.copy()
    bad.loc[0, "item_id"] = 1
    bad.to_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DataFormatError, match="1 unknown items"):
        read_raw(tmp_path)
