"""The history the query tower sees: in training (strictly earlier interactions) and at
serving (stored latest items, then the request's session items) are built alike."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.contract import TIMESTAMP, Catalog, History, history_matrix
from recsys.schema import load_schema
from training.data import history_before

SCHEMA = load_schema("synthetic")
USER, ITEM = SCHEMA.users.id, SCHEMA.items.id


def catalog_of(item_ids: list[int]) -> Catalog:
    n = len(item_ids)
    return Catalog(np.array(item_ids, dtype=np.int64), np.zeros((n, 1), np.int64),
                   np.zeros((n, 0), np.float32), np.zeros(n, np.int8))  # fmt: skip


def test_training_history_holds_only_strictly_earlier_items_of_the_same_user() -> None:
    catalog = catalog_of([10, 20, 30, 40])
    frame = pd.DataFrame({
        USER: [1, 1, 1, 1, 2, 2],
        ITEM: [10, 20, 30, 40, 40, 10],
        TIMESTAMP: [5, 1, 3, 3, 9, 2],  # unsorted; items 30 and 40 share a moment
    })  # fmt: skip
    history = history_before(frame, SCHEMA, catalog, 2)
    rows = {10: 1, 20: 2, 30: 3, 40: 4}  # catalog row + 1
    expected = [
        [rows[30], rows[40]],  # t=5: the two latest before it (both at t=3)
        [0, 0],  # t=1: nothing earlier
        [0, rows[20]],  # t=3: only t=1; its same-moment neighbour is not "before"
        [0, rows[20]],
        [0, rows[10]],  # user 2, t=9
        [0, 0],
    ]
    np.testing.assert_array_equal(history, expected)


def test_serving_history_is_stored_items_then_session_items_newest_last() -> None:
    stored = History(np.array([3, 7]), np.array([0, 3, 4]), np.array([10, 11, 12, 5]))
    np.testing.assert_array_equal(
        history_matrix(stored, np.array([3, 7, 9]), 2), [[12, 13], [0, 6], [0, 0]]
    )
    with_session = history_matrix(
        stored, np.array([3, 9]), 4, [np.array([1]), np.array([4, -1, 6])]
    )
    np.testing.assert_array_equal(with_session, [[11, 12, 13, 2], [0, 0, 5, 7]])
