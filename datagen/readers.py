"""Readers of a data directory in the schema's source layout, returning canonical frames.

tables        `<table>.parquet` or `<table>.csv` per table, schema column names
releases      one of the schema's published layouts, recognised by its files
single_table  `<source.file>.parquet|.csv`, user and item features inline on every row
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from datagen.checks import (
    canonical_entity,
    canonical_interactions,
    check_references,
    entity_columns,
    require_columns,
    timestamps,
)
from datagen.frames import DataFormatError, RawData
from recsys.schema import Entity, FeatureSchema, Release, TableFile


def read_data(schema: FeatureSchema, directory: Path) -> RawData:
    """Read and check a data directory laid out as `schema.source` declares."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFormatError(f"{directory}: not a directory")
    if schema.source.format == "tables":
        return read_tables(schema, directory)
    if schema.source.format == "releases":
        return read_release(schema, directory)
    return read_single_table(schema, directory)


# ---------------------------------------------------------------- files


def read_text(
    path: Path, *, sep: str = ",", header: bool = True, encoding: str = "utf-8"
) -> pd.DataFrame:
    """A delimited file as strings; only empty fields are missing. Comma files may quote
    fields; files with any other separator are read verbatim (GroupLens quotes nothing)."""
    try:
        return pd.read_csv(
            path,
            sep=re.escape(sep) if len(sep) > 1 else sep,
            engine="python" if len(sep) > 1 else "c",
            header=0 if header else None,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
            skip_blank_lines=True,
        )
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(
            f"{path}: cannot be read as {sep!r}-separated text ({encoding}): {exc}"
        ) from exc


def read_any(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else read_text(path)


def pick(directory: Path, stem: str) -> Path:
    """`<stem>.parquet`, else `<stem>.csv`; refuses when neither exists."""
    for suffix in (".parquet", ".csv"):
        if (directory / f"{stem}{suffix}").exists():
            return directory / f"{stem}{suffix}"
    raise DataFormatError(
        f"{directory / stem}.parquet: missing file (or {stem}.csv); "
        f"the directory has {sorted(p.name for p in directory.iterdir())}"
    )


def read_table_file(directory: Path, spec: TableFile) -> pd.DataFrame:
    """One file of a published layout, with the schema's column names: positional names,
    renames, 0/1 flag columns gathered into a token list, derived columns."""
    path = directory / spec.file
    where = str(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = read_text(path, sep=spec.sep, header=spec.header, encoding=spec.encoding)
    flags: pd.DataFrame | None = None
    if not spec.header:
        names = spec.columns or [str(i) for i in range(frame.shape[1])]
        if frame.shape[1] < len(names):
            raise DataFormatError(
                f"{where}: rows have {frame.shape[1]} field(s), the layout "
                f"needs {len(names)} ({names})"
            )
        if frame.shape[1] > len(names) and spec.flags_from is None:
            raise DataFormatError(
                f"{where}: rows have {frame.shape[1]} field(s), the layout "
                f"has {len(names)} ({names})"
            )
        if spec.flags_from is not None:
            flags = frame.iloc[:, spec.flags_from :]
        frame = frame.iloc[:, : len(names)].set_axis(names, axis=1)
    elif spec.flags_from is not None:
        flags = frame.iloc[:, spec.flags_from :]
        frame = frame.iloc[:, : spec.flags_from]
    frame = frame.rename(columns=spec.rename)
    if spec.flags_into is not None and flags is not None:
        frame[spec.flags_into] = gather_flags(directory, spec, flags)
    for new, (source, pattern) in spec.derive.items():
        require_columns(frame, [source], where)
        frame[new] = frame[source].astype(object).where(frame[source].notna(), "")
        frame[new] = frame[new].astype(str).str.extract(pattern, expand=True)[0]
    return frame


def gather_flags(directory: Path, spec: TableFile, flags: pd.DataFrame) -> pd.Series:
    """0/1 flag columns -> a list of the set flags' names (from `flag_names_file`)."""
    where = str(directory / spec.file)
    if spec.flag_names_file is None:
        names = [str(c) for c in flags.columns]
    else:
        names_path = directory / spec.flag_names_file
        if not names_path.exists():
            raise DataFormatError(
                f"{names_path}: missing file (names of the flag columns of {spec.file})"
            )
        lines = names_path.read_text(encoding=spec.encoding).splitlines()
        names = [line.split(spec.flag_names_sep)[0] for line in lines if line.strip()]
    if len(names) != flags.shape[1]:
        raise DataFormatError(
            f"{where}: column {spec.flags_into!r}: {flags.shape[1]} flag "
            f"field(s) but {len(names)} names in {spec.flag_names_file}"
        )
    values = flags.fillna("0").astype(str).apply(lambda c: c.str.strip())
    bad = ~values.isin(["0", "1"])
    if bad.to_numpy().any():
        row = int(bad.any(axis=1).to_numpy().nonzero()[0][0])
        raise DataFormatError(
            f"{where}: column {spec.flags_into!r}: flag fields must be 0 or "
            f"1, row {row} has {values.iloc[row].tolist()}"
        )
    on = (values == "1").to_numpy()
    return pd.Series(
        [[n for n, f in zip(names, row, strict=True) if f] for row in on], dtype=object
    )


# ---------------------------------------------------------------- formats


def read_tables(schema: FeatureSchema, directory: Path) -> RawData:
    users, items = (
        canonical_entity(read_any(path), entity, str(path))
        for entity in (schema.users, schema.items)
        for path in [pick(directory, entity.table)]
    )
    path = pick(directory, schema.interactions.table)
    return _finish(schema, users, items, read_any(path), str(path))


def _finish(
    schema: FeatureSchema,
    users: pd.DataFrame,
    items: pd.DataFrame,
    raw_interactions: pd.DataFrame,
    where: str,
) -> RawData:
    interactions = canonical_interactions(
        raw_interactions,
        schema,
        where,
        label=schema.interactions.label,
        timestamp_column=schema.interactions.timestamp,
    )
    check_references(interactions, users, items, schema, where)
    return RawData(users=users, items=items, interactions=interactions)


def recognise(schema: FeatureSchema, directory: Path) -> tuple[str, Release]:
    """The first release whose interactions and items files exist in `directory`."""
    for name, release in schema.source.releases.items():
        if all((directory / f.file).exists() for f in (release.interactions, release.items)):
            return name, release
    needs = "; ".join(
        f"{name}: {', '.join(f.file for f in (r.interactions, r.items, r.users) if f)}"
        for name, r in schema.source.releases.items()
    )
    raise DataFormatError(
        f"{directory}: matches no release of schema {schema.name!r} "
        f"(it has {sorted(p.name for p in directory.iterdir())}; "
        f"releases and their files: {needs})"
    )


def read_release(schema: FeatureSchema, directory: Path) -> RawData:
    name, release = recognise(schema, directory)
    items = canonical_entity(
        read_table_file(directory, release.items), schema.items, str(directory / release.items.file)
    )
    raw_interactions = read_table_file(directory, release.interactions)
    where = str(directory / release.interactions.file)
    if release.users is not None:
        if not (directory / release.users.file).exists():
            raise DataFormatError(
                f"{directory / release.users.file}: missing file (release {name} needs it)"
            )
        users = canonical_entity(
            read_table_file(directory, release.users),
            schema.users,
            str(directory / release.users.file),
        )
    else:
        users = ids_only_users(schema.users, raw_interactions, schema.interactions.user, where)
        print(
            f"release {name} has no users file: {len(users)} users from {where}, "
            f"with every user feature null"
        )
    return _finish(schema, users, items, raw_interactions, where)


def ids_only_users(
    entity: Entity, interactions: pd.DataFrame, column: str, where: str
) -> pd.DataFrame:
    """Users known only by the ids their interactions name; every feature is null."""
    strict = [n for n, f in entity.features.items() if not f.nullable]
    if strict:
        raise DataFormatError(
            f"{where}: column {column!r}: this layout has no users file, "
            f"but user feature(s) {strict} are not nullable"
        )
    require_columns(interactions, [column], where)
    frame = pd.DataFrame({entity.id: interactions[column].drop_duplicates()})
    for name in entity.features:
        frame[name] = None
    frame = canonical_entity(frame, entity, where)
    return frame.sort_values(entity.id, ignore_index=True)


def read_single_table(schema: FeatureSchema, directory: Path) -> RawData:
    assert schema.source.file is not None  # checked by the schema
    path = pick(directory, schema.source.file)
    return parse_single_table(schema, read_any(path), str(path))


def parse_single_table(schema: FeatureSchema, frame: pd.DataFrame, where: str) -> RawData:
    """Users and items from the latest row per id (a notice counts ids whose features vary
    across rows), interactions from every row."""
    interactions = canonical_interactions(
        frame,
        schema,
        where,
        label=schema.interactions.label,
        timestamp_column=schema.interactions.timestamp,
    )
    column = schema.interactions.timestamp
    order = (
        timestamps(frame[column], column, where).to_numpy().argsort(kind="stable")
        if column
        else np.arange(len(frame))
    )
    users = _latest(schema.users, frame, order, where)
    items = _latest(schema.items, frame, order, where)
    check_references(interactions, users, items, schema, where)
    return RawData(users=users, items=items, interactions=interactions)


def _latest(entity: Entity, frame: pd.DataFrame, order: np.ndarray, where: str) -> pd.DataFrame:
    rows = entity_columns(frame, entity, where).iloc[order]
    comparable = rows.apply(lambda c: c.map(lambda v: tuple(v) if isinstance(v, list) else v))
    varying = comparable.groupby(entity.id, sort=False).nunique(dropna=False).gt(1).any(axis=1)
    if varying.any():
        print(
            f"{where}: {int(varying.sum())} {entity.table} id(s) have feature values that "
            f"differ across rows; the latest row's values are used"
        )
    latest = rows.drop_duplicates(entity.id, keep="last")
    return latest.sort_values(entity.id, kind="stable", ignore_index=True)
