"""Readers of every source layout (published MovieLens releases, tables, Ali-CCP's single
table) and their refusals, each naming the file, the column and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from datagen import DataFormatError, RawData, generate, read_data, write_layout
from recsys.contract import LABEL, TIMESTAMP
from recsys.schema import FeatureSchema, load_schema
from recsys.settings import DataSettings

SMALL = DataSettings(num_users=60, num_items=40, impressions_per_user=6)
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


CHILDRENS = "Children's"


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t302\t5\t881250950\n"  # noqa: E501
U_USER = "22|25|M|writer|40206\n186|39|F|executive|00000\n196|49|M|writer|55105\n"
U_ITEM = (
    f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|"
    f"{flags('Comedy')}\n"
    f"302|L.A. Confidential (1997)|01-Jan-1997||"
    f"http://us.imdb.com/M/title-exact?L%2EA%2E+Confidential+(1997)|"
    f"{flags('Crime', 'Film-Noir', 'Mystery', 'Thriller')}\n"
    f"377|Heavyweights (1994)|01-Jan-1994||http://us.imdb.com/M/title-exact?Heavyweights%20(1994)|"
    f"{flags(CHILDRENS, 'Comedy')}\n"
    f"1300|'Til There Was You (1997)|30-May-1997||http://us.imdb.com/M/title-exact?'Til%20(1997)|"
    f"{flags('Drama', 'Romance')}\n"
    f"1472|Café au Lait (Métisse) (1993)|01-Jan-1993||http://us.imdb.com/Title?M%E9tisse|"
    f"{flags('Comedy')}\n"
    f"267|unknown||||{flags('unknown')}\n"
)
U_GENRE = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n"


def ml100k(directory: Path, **replace: str) -> Path:
    """A tiny ml-100k directory, byte for byte as GroupLens publishes it."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"u.data": U_DATA, "u.user": U_USER, "u.item": U_ITEM, "u.genre": U_GENRE}
    files.update(replace)
    for name, text in files.items():
        (directory / name).write_bytes(text.encode("latin-1"))
    return directory


@pytest.fixture(scope="module")
def movielens() -> FeatureSchema:
    return load_schema("movielens")


@pytest.fixture(scope="module")
def synthetic() -> FeatureSchema:
    return load_schema("synthetic")


def variant(schema: FeatureSchema, side: str, feature: str, **changes: Any) -> FeatureSchema:
    raw = schema.model_dump()
    raw[side]["features"][feature].update(changes)
    return FeatureSchema.model_validate(raw)


def test_hand_written_ml_100k_reads_as_published(movielens: FeatureSchema, tmp_path: Path) -> None:
    data = read_data(movielens, ml100k(tmp_path))
    expected_users = pd.DataFrame(
        {
            "user_id": np.array([22, 186, 196], np.int64),
            "gender": ["M", "F", "M"],
            "age": np.array([25, 39, 49], np.float32),
            "occupation": ["writer", "executive", "writer"],
            "zip_code": ["40206", "00000", "55105"],  # leading zeros kept: a string
        }
    )
    pd.testing.assert_frame_equal(data.users, expected_users)
    expected_items = pd.DataFrame(
        {
            "item_id": np.array([242, 302, 377, 1300, 1472, 267], np.int64),
            "genres": [
                ["Comedy"],
                ["Crime", "Film-Noir", "Mystery", "Thriller"],
                ["Children's", "Comedy"],
                ["Drama", "Romance"],
                ["Comedy"],
                ["unknown"],
            ],
            "year": np.array([1996, 1997, 1994, 1997, 1993, np.nan], np.float32),
        }
    )
    pd.testing.assert_frame_equal(data.items, expected_items)
    expected_interactions = pd.DataFrame(
        {
            "user_id": np.array([22, 196, 196, 186], np.int64),
            "item_id": np.array([377, 242, 302, 302], np.int64),
            TIMESTAMP: np.array([878887116, 881250949, 881250950, 891717742], np.int64),
            LABEL: np.array([0, 0, 1, 0], np.int8),  # rating >= 4
        }
    )
    pd.testing.assert_frame_equal(data.interactions, expected_interactions)


def _rounded_year(data: RawData) -> pd.DataFrame:
    return data.items.assign(year=data.items["year"].round().astype(np.float32))


@pytest.mark.parametrize("release", ["ml-100k", "ml-1m", "ml-latest-small"])
def test_written_releases_read_back(
    movielens: FeatureSchema, release: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = generate(movielens, SMALL)
    write_layout(data, movielens, tmp_path, release)
    spec = movielens.source.releases[release]
    expected_files = {f.file for f in (spec.users, spec.items, spec.interactions) if f}
    if spec.items.flag_names_file:
        expected_files.add(spec.items.flag_names_file)
    assert {p.name for p in tmp_path.iterdir()} == expected_files
    back = read_data(movielens, tmp_path)
    pd.testing.assert_frame_equal(back.items, _rounded_year(data))  # a title holds a year
    pd.testing.assert_frame_equal(back.interactions, data.interactions)
    if spec.users is not None:
        pd.testing.assert_frame_equal(back.users, data.users)
    else:
        assert "has no users file" in capsys.readouterr().out
        seen = np.sort(data.interactions["user_id"].unique())
        assert back.users["user_id"].tolist() == seen.tolist()
        assert back.users[["gender", "occupation", "zip_code"]].isna().all().all()
        assert back.users["age"].isna().all()


def test_published_text_details(movielens: FeatureSchema, tmp_path: Path) -> None:
    data = generate(movielens, SMALL)
    for release in movielens.source.releases:
        write_layout(data, movielens, tmp_path / release, release)
    ratings = (tmp_path / "ml-1m" / "ratings.dat").read_text().splitlines()
    assert all(len(line.split("::")) == 4 for line in ratings)
    user_id, item_id, rating, _ = ratings[0].split("::")
    first = data.interactions.iloc[0]
    assert (int(user_id), int(item_id)) == (first["user_id"], first["item_id"])
    ratings_by_label = pd.Series([int(line.split("::")[2]) for line in ratings])
    assert ratings_by_label[data.interactions[LABEL].to_numpy() == 1].between(4, 5).all()
    assert ratings_by_label[data.interactions[LABEL].to_numpy() == 0].between(1, 3).all()
    movies = (tmp_path / "ml-latest-small" / "movies.csv").read_text().splitlines()
    assert movies[0] == "movieId,title,genres"
    assert movies[1].split(",", 1)[1].startswith('"')  # a title with a comma is quoted
    assert (
        (tmp_path / "ml-latest-small" / "ratings.csv")
        .read_text()
        .startswith("userId,movieId,rating,timestamp\n")
    )
    u_item = (tmp_path / "ml-100k" / "u.item").read_text(encoding="latin-1").splitlines()
    genres = [g for g in (tmp_path / "ml-100k" / "u.genre").read_text().splitlines() if g]
    assert all(len(line.split("|")) == 5 + len(genres) for line in u_item)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_tables_round_trip(synthetic: FeatureSchema, fmt: str, tmp_path: Path) -> None:
    data = generate(synthetic, SMALL)
    write_layout(data, synthetic, tmp_path, fmt=fmt)  # type: ignore[arg-type]
    assert {p.name for p in tmp_path.iterdir()} == {
        f"{t}.{fmt}" for t in ("users", "items", "interactions")
    }
    back = read_data(synthetic, tmp_path)
    for name in ("users", "items", "interactions"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(data, name))


def test_multi_hot_tables_in_csv_split_on_the_separator(
    movielens: FeatureSchema, tmp_path: Path
) -> None:
    raw = movielens.model_dump()
    raw["source"] = {"format": "tables"}
    tables = FeatureSchema.model_validate(raw)
    data = generate(tables, SMALL)
    write_layout(data, tables, tmp_path, fmt="csv")
    back = read_data(tables, tmp_path)
    assert back.items["genres"].tolist() == data.items["genres"].tolist()
    assert all(isinstance(v, list) for v in back.items["genres"])  # never None


def test_single_table_takes_the_latest_row_and_notices_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = load_schema("aliccp")
    rows = pd.DataFrame({"user_id": [1, 2, 1], "item_id": [10, 10, 11], "click": [0, 1, 1]})
    for name in schema.users.features:
        rows[name] = [5, 6, 5]
    for name in schema.items.features:
        rows[name] = [7, 7, 8]
    rows.loc[2, "user_age"] = 9  # user 1 changed age
    rows.to_csv(tmp_path / "train.csv", index=False)
    data = read_data(schema, tmp_path)
    assert "1 users id(s) have feature values that differ" in capsys.readouterr().out
    assert data.users["user_id"].tolist() == [1, 2]
    assert data.users["user_age"].tolist() == [9, 6]
    assert data.users["user_age"].dtype == np.int64
    assert data.interactions[TIMESTAMP].tolist() == [0, 1, 2]  # file order
    assert data.interactions[LABEL].tolist() == [0, 1, 1]
    rows.loc[1, "user_age"] = None  # nullable int64 with a gap: Python ints and None
    rows.to_csv(tmp_path / "train.csv", index=False)
    ages = read_data(schema, tmp_path).users["user_age"]
    assert ages.dtype == object and ages.tolist() == [9, None]
    strict = variant(schema, "users", "user_age", nullable=False)
    with pytest.raises(DataFormatError, match=r"train\.csv: column 'user_age': 1 missing"):
        read_data(strict, tmp_path)
    rows.loc[1, "user_age"] = "x"
    rows.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataFormatError, match=r"column 'user_age': non-numeric value 'x' in row 1"):
        read_data(schema, tmp_path)


# ---------------------------------------------------------------- refusals


@pytest.fixture()
def tables(synthetic: FeatureSchema, tmp_path: Path) -> tuple[RawData, Path]:
    data = generate(synthetic, SMALL)
    write_layout(data, synthetic, tmp_path, fmt="csv")
    return data, tmp_path


def _rewrite(path: Path, change: Any) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "items.csv",
            lambda f: f.drop(columns=["brand"], inplace=True),
            r"items\.csv: missing required column\(s\) \['brand'\]; the file has \['item_id', ",
        ),
        (
            "users.csv",
            lambda f: f.loc.__setitem__((3, "age"), "old"),
            r"users\.csv: column 'age': non-numeric value 'old' in row 3",
        ),
        (
            "users.csv",
            lambda f: f.loc.__setitem__((4, "user_id"), f.loc[0, "user_id"]),
            r"users\.csv: column 'user_id': 1 duplicate id\(s\)",
        ),
        (
            "items.csv",
            lambda f: f.loc.__setitem__((2, "item_id"), "-5"),
            r"items\.csv: column 'item_id': negative id -5 in row 2",
        ),
        (
            "users.csv",
            lambda f: f.loc.__setitem__((2, "user_id"), ""),
            r"users\.csv: column 'user_id': 1 missing value",
        ),
        (
            "interactions.csv",
            lambda f: f.loc.__setitem__((0, "item_id"), "1"),
            r"interactions\.csv: column 'item_id': 1 interaction\(s\) name unknown items ids",
        ),
        (
            "interactions.csv",
            lambda f: f.loc.__setitem__(([0, 1], "user_id"), "7"),
            r"interactions\.csv: column 'user_id': 2 interaction\(s\) name unknown users ids",
        ),
        (
            "interactions.csv",
            lambda f: f.loc.__setitem__((0, "click"), "2"),
            r"interactions\.csv: column 'click': a 0/1 label column holds other values, e\.g\. \[2",
        ),
        (
            "interactions.csv",
            lambda f: f.loc.__setitem__((5, "timestamp"), "12.5"),
            r"interactions\.csv: column 'timestamp': non-integer value '12\.5' in row 5",
        ),
        (
            "interactions.csv",
            lambda f: f.loc.__setitem__((5, "timestamp"), ""),
            r"interactions\.csv: column 'timestamp': 1 missing value\(s\) in a timestamp column",
        ),
    ],
)
def test_bad_tables_are_refused(
    synthetic: FeatureSchema, tables: tuple[RawData, Path], file: str, change: Any, message: str
) -> None:
    _, directory = tables
    _rewrite(directory / file, change)
    with pytest.raises(DataFormatError, match=message):
        read_data(synthetic, directory)


def test_null_in_a_non_nullable_feature_is_refused(
    synthetic: FeatureSchema, tables: tuple[RawData, Path]
) -> None:
    _, directory = tables
    _rewrite(directory / "users.csv", lambda f: f.loc.__setitem__((1, "country"), ""))
    strict = variant(synthetic, "users", "country", nullable=False)
    with pytest.raises(
        DataFormatError,
        match=r"users\.csv: column 'country': 1 missing value"
        r"\(s\) in a non-nullable feature \(first in row 1\)",
    ):
        read_data(strict, directory)


@pytest.mark.parametrize(
    ("u_data", "message"),
    [
        ("196\t242\t\t881250949\n", r"u\.data: column 'rating': 1 missing value\(s\) in a label"),
        ("196\t242\tgood\t881250949\n", r"u\.data: column 'rating': non-numeric value 'good'"),
        ("196\t242\t3\t\n", r"u\.data: column 'timestamp': 1 missing value"),
        ("196\t242\t3\n", r"u\.data: rows have 3 field\(s\), the layout needs 4"),
    ],
)
def test_bad_ratings_are_refused(
    movielens: FeatureSchema, tmp_path: Path, u_data: str, message: str
) -> None:
    with pytest.raises(DataFormatError, match=message):
        read_data(movielens, ml100k(tmp_path, **{"u.data": u_data}))


def test_release_layout_problems_are_refused(movielens: FeatureSchema, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(
        DataFormatError,
        match=r"matches no release .*ml-100k: u\.data, u\.item, " r"u\.user; ml-1m: ratings\.dat",
    ):
        read_data(movielens, tmp_path)
    extra = ml100k(tmp_path / "extra", **{"u.user": "22|25|M|writer|40206|surplus\n"})
    with pytest.raises(DataFormatError, match=r"u\.user: rows have 6 field\(s\), the layout has 5"):
        read_data(movielens, extra)
    no_users = ml100k(tmp_path / "no_users")
    (no_users / "u.user").unlink()
    with pytest.raises(DataFormatError, match=r"u\.user: missing file \(release ml-100k"):
        read_data(movielens, no_users)
    wrong_names = ml100k(tmp_path / "genres", **{"u.genre": "Action|0\n"})
    with pytest.raises(
        DataFormatError,
        match=r"u\.item: column 'genres': 19 flag field\(s\) but " r"1 names in u\.genre",
    ):
        read_data(movielens, wrong_names)


def test_a_layout_without_users_needs_nullable_user_features(
    movielens: FeatureSchema, tmp_path: Path
) -> None:
    write_layout(generate(movielens, SMALL), movielens, tmp_path, "ml-latest-small")
    strict = variant(movielens, "users", "gender", nullable=False)
    with pytest.raises(
        DataFormatError,
        match=r"ratings\.csv: column 'user_id': this layout has "
        r"no users file, but user feature\(s\) \['gender'\]",
    ):
        read_data(strict, tmp_path)
