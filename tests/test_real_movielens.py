"""Real data: GroupLens' MovieLens-100k, fetched from a pinned PyPI wheel (RecBole ships it)
and written in the published ml-100k layout, read by the movielens schema unchanged."""

from __future__ import annotations

from pathlib import Path

from datagen import read_data
from recsys.contract import LABEL
from recsys.schema import load_schema


def test_the_published_layout_reads_as_movielens_100k(ml_100k: Path) -> None:
    assert sorted(p.name for p in ml_100k.iterdir()) == ["u.data", "u.genre", "u.item", "u.user"]
    schema = load_schema("movielens")
    data = read_data(schema, ml_100k)
    # GroupLens' README: 100,000 ratings (1-5) from 943 users on 1,682 movies.
    assert len(data.interactions) == 100_000
    assert len(data.users) == 943 and len(data.items) == 1682
    assert data.users.loc[data.users["user_id"] == 1, "occupation"].item() == "technician"
    toy_story = data.items.loc[data.items["item_id"] == 1].iloc[0]
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy_story["year"] == 1995
    # Zip codes stay strings (some are Canadian, some start with 0).
    assert data.users["zip_code"].map(type).eq(str).all()
    assert data.users["zip_code"].str.startswith("0").any()
    # Label rating >= 4: about 55% of MovieLens-100k's ratings.
    assert 0.5 < data.interactions[LABEL].mean() < 0.6
