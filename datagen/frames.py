"""The canonical data frames every reader and the generator return, and the time split.

users   [users.id, *users.features]: id int64 (unique, >= 0); continuous float32 (NaN
        missing); string categorical/hashed: Python str or None; int64 categorical/hashed:
        int64 (nullable with missing values: Python int or None); multi_hot: lists of
        tokens (str, or int for int64), an empty list when missing, never None.
items   the same with the item table.
interactions [users.id, items.id, TIMESTAMP int64, LABEL int8 0/1], sorted stably by
        TIMESTAMP (the row number in file order when the schema has no timestamp).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from recsys.contract import TIMESTAMP


class DataFormatError(ValueError):
    """Data that does not follow its schema: the message names the file, column and
    problem."""


@dataclass(frozen=True)
class RawData:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame


@dataclass(frozen=True)
class SplitData:
    users: pd.DataFrame
    items: pd.DataFrame
    train: pd.DataFrame
    valid: pd.DataFrame


def split(data: RawData, validation_fraction: float) -> SplitData:
    """Hold out the latest interactions (global time split): the rows after the
    (1 - validation_fraction) quantile of TIMESTAMP; the model never sees the future it is
    scored on."""
    interactions = data.interactions
    cutoff = interactions[TIMESTAMP].quantile(1.0 - validation_fraction)
    train = interactions[interactions[TIMESTAMP] <= cutoff].reset_index(drop=True)
    valid = interactions[interactions[TIMESTAMP] > cutoff].reset_index(drop=True)
    if train.empty or valid.empty:
        raise DataFormatError(
            f"time split at validation_fraction={validation_fraction} left an empty side "
            f"({len(train)} train, {len(valid)} validation rows)"
        )
    return SplitData(users=data.users, items=data.items, train=train, valid=valid)
