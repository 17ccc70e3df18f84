"""Request overrides are parsed and bounded by the feature schema (serving/overrides.py)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from recsys.schema import Feature
from serving.overrides import OverrideError, parse_override

AGE = Feature(kind="continuous", range=(0, 150))
CITY = Feature(kind="categorical", max_length=12)
SHOP = Feature(kind="categorical", dtype="int64", range=(0, 1000))
TAGS = Feature(kind="multi_hot", max_tokens=3, max_length=8)


def test_numbers_must_be_finite_and_in_range() -> None:
    assert parse_override("age", AGE, np.array([[31.5]], np.float32)).tolist() == [31.5]
    for bad, message in ((np.nan, "must be finite"), (np.inf, "must be finite"),
                         (151.0, "must be between 0 and 150")):  # fmt: skip
        with pytest.raises(OverrideError, match=f"input 'age' {message}"):
            parse_override("age", AGE, np.array([[bad]], np.float32))
    with pytest.raises(OverrideError, match="input 'shop' must be between 0 and 1000"):
        parse_override("shop", SHOP, np.array([[1001]], np.int64))


def test_strings_are_utf8_bounded_and_nfc_normalised() -> None:
    decomposed = unicodedata.normalize("NFD", "Zürich")
    assert decomposed != "Zürich"
    parsed = parse_override("city", CITY, np.array([[decomposed.encode()]], dtype=object))
    assert parsed.tolist() == ["Zürich"]  # the composed spelling the vocabulary holds
    with pytest.raises(OverrideError, match="input 'city' is 13 bytes long; at most 12"):
        parse_override("city", CITY, np.array([[b"x" * 13]], dtype=object))
    with pytest.raises(OverrideError, match="input 'city' is not valid UTF-8"):
        parse_override("city", CITY, np.array([[b"\xff"]], dtype=object))


def test_token_lists_drop_their_padding() -> None:
    rows = np.array([[b"a", b"b", b""], [b"c", b"", b""]], dtype=object)
    assert parse_override("tags", TAGS, rows).tolist() == [["a", "b"], ["c"]]
    with pytest.raises(OverrideError, match="input 'tags' is 9 bytes long"):
        parse_override("tags", TAGS, np.array([[b"123456789"]], dtype=object))
