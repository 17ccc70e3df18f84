"""Checks and conversion of parsed columns into the canonical frames (see frames.py).

Every problem raises DataFormatError naming the file (`where`), the column and the
problem; rows are counted from 0 after any header line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from datagen.frames import DataFormatError
from recsys.contract import LABEL, TIMESTAMP
from recsys.schema import RULE_OPERATORS, Entity, Feature, FeatureSchema, Label, label_rule


def fail(where: str, column: str, problem: str) -> NoReturn:
    raise DataFormatError(f"{where}: column {column!r}: {problem}")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{where}: missing required column(s) {missing}; the file has {list(frame.columns)}"
        )


def missing_mask(series: pd.Series) -> pd.Series:
    """None, NaN and empty strings are missing (a list, even empty, is a value)."""
    mask = series.isna()
    if series.dtype == object:
        mask |= series.map(lambda v: isinstance(v, str) and v == "")
    return mask


def _first(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def numbers(series: pd.Series, where: str, column: str, *, integer: bool) -> pd.Series:
    """Numbers (float64 or int64) with NaN for missing; refuses non-numeric values and, with
    `integer`, fractional ones."""
    missing = missing_mask(series)
    if series.dtype == object:
        series = series.where(~missing, None)
        series = series.map(lambda v: v.strip() if isinstance(v, str) else v)
    if series.dtype == bool:
        fail(where, column, "holds booleans, not numbers")
    parsed = pd.to_numeric(series, errors="coerce")
    bad = parsed.isna() & ~missing
    if bad.any():
        row = _first(bad)
        fail(
            where,
            column,
            f"non-numeric value {series.iloc[row]!r} in row {row} ({int(bad.sum())} such rows)",
        )
    if integer and parsed.dtype.kind == "f":
        fractional = parsed.notna() & (parsed != np.floor(parsed))
        if fractional.any():
            row = _first(fractional)
            fail(where, column, f"non-integer value {series.iloc[row]!r} in row {row}")
    return parsed


def _no_missing(series: pd.Series, missing: pd.Series, where: str, column: str, what: str) -> None:
    if missing.any():
        row = _first(missing)
        fail(
            where,
            column,
            f"{int(missing.sum())} missing value(s) in a {what} (first in row {row})",
        )


def ids(series: pd.Series, where: str, column: str) -> pd.Series:
    """An id column: integers >= 0, none missing, as int64."""
    parsed = numbers(series, where, column, integer=True)
    _no_missing(series, parsed.isna(), where, column, "non-nullable id column")
    parsed = parsed.astype(np.int64)
    negative = parsed < 0
    if negative.any():
        row = _first(negative)
        fail(where, column, f"negative id {int(parsed.iloc[row])} in row {row}")
    return parsed.reset_index(drop=True)


def unique_ids(series: pd.Series, where: str, column: str) -> None:
    duplicated = series.duplicated()
    if duplicated.any():
        values = sorted(set(series[duplicated].tolist()))
        fail(where, column, f"{len(values)} duplicate id(s), e.g. {values[:5]}")


def _token(value: Any, feature: Feature, where: str, column: str) -> str | int:
    if feature.value_type == "int64":
        try:
            number = float(value)
        except (TypeError, ValueError):
            fail(where, column, f"token {value!r} is not an integer")
        if number != int(number):
            fail(where, column, f"token {value!r} is not an integer")
        return int(number)
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _tokens(value: Any, feature: Feature, where: str, column: str) -> list[Any]:
    if isinstance(value, list | tuple | np.ndarray):
        raw = list(value)
    elif value is None or (isinstance(value, float) and np.isnan(value)):
        raw = []
    elif isinstance(value, str):
        raw = [t.strip() for t in value.split(feature.separator)]
    else:
        raw = [value]
    return [_token(t, feature, where, column) for t in raw if t is not None and t != ""]


def feature_column(series: pd.Series, name: str, feature: Feature, where: str) -> pd.Series:
    """One feature column in its canonical type (see frames.py)."""
    series = series.reset_index(drop=True)
    if feature.kind == "multi_hot":
        out = pd.Series([_tokens(v, feature, where, name) for v in series], dtype=object)
        if not feature.nullable:
            _no_missing(series, out.map(len) == 0, where, name, "non-nullable feature")
        return out
    missing = missing_mask(series)
    if not feature.nullable:
        _no_missing(series, missing, where, name, "non-nullable feature")
    if feature.kind == "continuous":
        return numbers(series, where, name, integer=False).astype(np.float32)
    if feature.value_type == "int64":
        parsed = numbers(series, where, name, integer=True)
        if not parsed.isna().any():
            return parsed.astype(np.int64)
        return pd.Series([None if pd.isna(v) else int(v) for v in parsed], dtype=object)
    return pd.Series(
        [None if m else _text(v) for v, m in zip(series, missing, strict=True)], dtype=object
    )


def entity_columns(frame: pd.DataFrame, entity: Entity, where: str) -> pd.DataFrame:
    """Id and feature columns converted row by row (ids need not be unique yet)."""
    require_columns(frame, [entity.id, *entity.features], where)
    columns = {entity.id: ids(frame[entity.id], where, entity.id)}
    for name, feature in entity.features.items():
        columns[name] = feature_column(frame[name], name, feature, where)
    return pd.DataFrame(columns)


def canonical_entity(frame: pd.DataFrame, entity: Entity, where: str) -> pd.DataFrame:
    """The canonical users or items frame: checked, typed, unique ids."""
    out = entity_columns(frame, entity, where)
    unique_ids(out[entity.id], where, entity.id)
    return out


def label_values(series: pd.Series, label: Label, where: str) -> pd.Series:
    """The 0/1 label (int8): a 0/1 column as is, a rated column through the rule."""
    column, rule = label.column, label_rule(label)
    parsed = numbers(series, where, column, integer=False)
    _no_missing(series, parsed.isna(), where, column, f"label column ({label.describe()})")
    if rule is None:
        other = sorted(set(parsed.unique().tolist()) - {0, 1})
        if other:
            fail(where, column, f"a 0/1 label column holds other values, e.g. {other[:5]}")
        return parsed.astype(np.int8).reset_index(drop=True)
    op, threshold = rule
    return RULE_OPERATORS[op](parsed, threshold).astype(np.int8).reset_index(drop=True)


def timestamps(series: pd.Series, column: str, where: str) -> pd.Series:
    parsed = numbers(series, where, column, integer=True)
    _no_missing(series, parsed.isna(), where, column, "timestamp column")
    return parsed.astype(np.int64).reset_index(drop=True)


def canonical_interactions(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    where: str,
    *,
    label: Label,
    timestamp_column: str | None,
) -> pd.DataFrame:
    """[user id, item id, TIMESTAMP, LABEL], sorted stably by TIMESTAMP (the row number in
    file order without a timestamp column)."""
    user, item = schema.interactions.user, schema.interactions.item
    needed = [user, item, label.column, *([timestamp_column] if timestamp_column else [])]
    require_columns(frame, needed, where)
    time = (
        timestamps(frame[timestamp_column], timestamp_column, where)
        if timestamp_column
        else pd.Series(np.arange(len(frame), dtype=np.int64))
    )
    out = pd.DataFrame(
        {
            schema.users.id: ids(frame[user], where, user),
            schema.items.id: ids(frame[item], where, item),
            TIMESTAMP: time,
            LABEL: label_values(frame[label.column], label, where),
        }
    )
    return out.sort_values(TIMESTAMP, kind="stable", ignore_index=True)


def check_references(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    schema: FeatureSchema,
    where: str,
) -> None:
    """Interactions may name only known users and items."""
    for entity, table, column in (
        (schema.users, users, schema.interactions.user),
        (schema.items, items, schema.interactions.item),
    ):
        unknown = ~interactions[entity.id].isin(table[entity.id])
        if unknown.any():
            examples = sorted(set(interactions.loc[unknown, entity.id].tolist()))[:5]
            fail(
                where,
                column,
                f"{int(unknown.sum())} interaction(s) name unknown "
                f"{entity.table} ids, e.g. {examples}",
            )
