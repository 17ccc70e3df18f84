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


def split(
    data: RawData, validation_fraction: float, strategy: str = "time", last_n: int = 10
) -> SplitData:
    """Hold out interactions for validation.

    `time` (default): the latest interactions overall, after the (1 - validation_fraction)
    quantile of TIMESTAMP; the model never sees the future it is scored on, and users who
    only arrive later are cold. `leave_last_n`: each user's latest `last_n` interactions
    (users with no more than `last_n` stay in training): every validation user is warm,
    at the price of training on other users' later behaviour.
    """
    interactions = data.interactions
    if strategy == "time":
        cutoff = interactions[TIMESTAMP].quantile(1.0 - validation_fraction)
        held_out = (interactions[TIMESTAMP] > cutoff).to_numpy()
    elif strategy == "leave_last_n":
        user = interactions.columns[0]  # canonical order: user id, item id, time, label
        order = interactions.sort_values([user, TIMESTAMP], kind="stable")
        from_end = order.groupby(user, sort=False).cumcount(ascending=False)
        sizes = order.groupby(user, sort=False)[user].transform("size")
        held_out = ((from_end < last_n) & (sizes > last_n)).reindex(interactions.index).to_numpy()
    else:
        raise DataFormatError(f"unknown split strategy {strategy!r} (time | leave_last_n)")
    train = interactions[~held_out].reset_index(drop=True)
    valid = interactions[held_out].reset_index(drop=True)
    if train.empty or valid.empty:
        raise DataFormatError(
            f"{strategy} split (validation_fraction={validation_fraction}, last_n={last_n}) "
            f"left an empty side ({len(train)} train, {len(valid)} validation rows)"
        )
    return SplitData(users=data.users, items=data.items, train=train, valid=valid)
