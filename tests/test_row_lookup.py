"""RowLookup: the row of each id in an unsorted id array, -1 where unknown (what pandas'
Index.get_indexer answered before it left the per-request path)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.contract import RowLookup


def test_rows_match_pandas_get_indexer_for_known_unknown_and_repeated_ids() -> None:
    rng = np.random.default_rng(7)
    catalog = rng.permutation(np.arange(10, 5000, 3, dtype=np.int64))
    asked = np.concatenate([rng.choice(catalog, 200), [-1, 0, 11, 10**12], catalog[:3]])
    expected = pd.Index(catalog).get_indexer(asked)
    assert RowLookup(catalog)(asked).tolist() == expected.tolist()


def test_an_empty_catalog_or_request_answers_without_error() -> None:
    assert RowLookup(np.empty(0, np.int64))(np.array([1, 2])).tolist() == [-1, -1]
    assert RowLookup(np.array([5, 3]))(np.empty(0, np.int64)).tolist() == []
