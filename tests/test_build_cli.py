"""The build refuses a bad schema or bad data before writing anything, naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build import main


def test_an_unknown_schema_is_refused_naming_the_shipped_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--schema", "nope", "--artifacts", str(tmp_path / "a")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.yaml does not exist" in err and "movielens" in err
    assert not (tmp_path / "a").exists()


def test_an_invalid_schema_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "bad.yaml"
    schema.write_text(
        "users: {table: u, id: uid, features: {zip: {kind: hashed}}}\n"
        "items: {table: i, id: iid, features: {}}\n"
        "interactions: {table: x, user: uid, item: iid, label: {column: y}}\n"
    )
    assert main(["--schema", str(schema), "--artifacts", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "users.features.zip" in err and "needs `buckets`" in err


def test_data_that_does_not_match_its_schema_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ml-100k directory whose u.data has a non-numeric rating."""
    data = tmp_path / "ml-100k"
    data.mkdir()
    (data / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (data / "u.genre").write_text("unknown|0\nAction|1\n\n")
    (data / "u.item").write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|GoldenEye (1995)|01-Jan-1995||http://y|1|0\n",
        encoding="latin-1",
    )
    (data / "u.data").write_text("1\t1\t5\t874965758\n2\t2\tgreat\t876893171\n")
    artifacts = tmp_path / "artifacts"
    code = main(["--schema", "movielens", "--data-dir", str(data), "--artifacts", str(artifacts)])
    assert code == 2
    err = capsys.readouterr().err
    assert "u.data" in err and "rating" in err
    assert not artifacts.exists()
