"""Write canonical data in a schema's source layout (the inverse of the readers): test
fixtures in the exact published layouts, and conversion of data between layouts."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from datagen.frames import RawData
from recsys.contract import LABEL, TIMESTAMP
from recsys.schema import RULE_OPERATORS, Entity, FeatureSchema, Label, TableFile, label_rule

Format = Literal["parquet", "csv"]


def write_layout(
    data: RawData,
    schema: FeatureSchema,
    directory: Path,
    release: str | None = None,
    *,
    fmt: Format = "parquet",
) -> None:
    """Write `data` exactly as `schema.source` lays it out: `tables` and `single_table` as
    parquet or CSV (`fmt`), `releases` as the named release (default: the first one). The
    label column is written by inverting the label's rule (realistic 1..5 ratings)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    interactions = raw_interactions(data, schema)
    source, seps = schema.source, separators(schema)
    if source.format == "tables":
        for data_frame, entity in ((data.users, schema.users), (data.items, schema.items)):
            _write(entity_frame(data_frame, entity), directory / entity.table, fmt, seps)
        _write(interactions, directory / schema.interactions.table, fmt, seps)
    elif source.format == "single_table":
        assert source.file is not None
        inline = interactions.merge(
            data.users.rename(columns={schema.users.id: schema.interactions.user}),
            on=schema.interactions.user,
            how="left",
        ).merge(
            data.items.rename(columns={schema.items.id: schema.interactions.item}),
            on=schema.interactions.item,
            how="left",
        )
        columns = [
            schema.interactions.user,
            *schema.users.features,
            schema.interactions.item,
            *schema.items.features,
            *interactions.columns[2:],
        ]
        _write(inline[columns], directory / source.file, fmt, seps)
    else:
        name = release or next(iter(source.releases))
        if name not in source.releases:
            raise ValueError(
                f"schema {schema.name!r} has no release {name!r} "
                f"(it has {sorted(source.releases)})"
            )
        layout = source.releases[name]
        if layout.users is not None:
            write_table_file(data.users, schema.users.id, layout.users, directory, seps)
        write_table_file(data.items, schema.items.id, layout.items, directory, seps)
        write_table_file(
            interactions, schema.interactions.user, layout.interactions, directory, seps
        )


def entity_frame(frame: pd.DataFrame, entity: Entity) -> pd.DataFrame:
    return frame[[entity.id, *entity.features]]


def raw_interactions(data: RawData, schema: FeatureSchema) -> pd.DataFrame:
    """Interactions with the schema's column names and raw label values, in time order
    (the timestamp column is left out when the schema has none)."""
    spec = schema.interactions
    frame = pd.DataFrame(
        {
            spec.user: data.interactions[schema.users.id].to_numpy(),
            spec.item: data.interactions[schema.items.id].to_numpy(),
            spec.label.column: raw_labels(data.interactions[LABEL].to_numpy(), spec.label),
        }
    )
    if spec.timestamp:
        frame[spec.timestamp] = data.interactions[TIMESTAMP].to_numpy()
    return frame


def raw_labels(labels: np.ndarray, label: Label) -> np.ndarray:
    """0/1 labels as the label column holds them: unchanged without a rule, else ratings
    (1..5 where the rule allows) on the right side of the rule's threshold."""
    rule = label_rule(label)
    if rule is None:
        return labels.astype(np.int8)
    op, threshold = rule
    low, high = min(1, math.floor(threshold) - 5), max(5, math.ceil(threshold) + 5)
    candidates = np.arange(low, high + 1)
    holds = RULE_OPERATORS[op](candidates, threshold)
    rng = np.random.default_rng(0)

    def choose(side: np.ndarray, count: int) -> np.ndarray:
        usual = side[(side >= 1) & (side <= 5)]
        return rng.choice(usual if usual.size else side, count)

    positive = choose(candidates[holds], len(labels))
    negative = choose(candidates[~holds], len(labels))
    return np.where(labels == 1, positive, negative).astype(np.int64)


# ---------------------------------------------------------------- cells and files


def cell(value: Any, separator: str = "|") -> str:
    """One value as text: empty when missing, token lists joined, floats shortest."""
    if isinstance(value, list | tuple | np.ndarray):
        return separator.join(str(t) for t in value)
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        if float(value).is_integer():
            return str(int(value))
        return np.format_float_positional(np.float32(value), trim="-")
    return str(value)


def text_frame(frame: pd.DataFrame, separators: dict[str, str] | None = None) -> pd.DataFrame:
    separators = separators or {}
    return pd.DataFrame(
        {c: [cell(v, separators.get(c, "|")) for v in frame[c]] for c in frame.columns}
    )


def separators(schema: FeatureSchema) -> dict[str, str]:
    """How each multi_hot column's tokens are joined in text files."""
    entities = (schema.users, schema.items)
    return {n: f.separator for e in entities for n, f in e.features.items()}


def _write(frame: pd.DataFrame, stem: Path, fmt: Format, seps: dict[str, str]) -> None:
    if fmt == "parquet":
        frame.to_parquet(stem.with_name(stem.name + ".parquet"), index=False)
    else:
        write_text(text_frame(frame, seps), stem.with_name(stem.name + ".csv"))


def write_text(
    frame: pd.DataFrame, path: Path, *, sep: str = ",", header: bool = True, encoding: str = "utf-8"
) -> None:
    """Strings as a delimited file: comma files quote where needed; other separators are
    written verbatim (a value holding the separator is refused)."""
    if sep == ",":
        frame.to_csv(
            path,
            index=False,
            header=header,
            encoding=encoding,
            quoting=csv.QUOTE_MINIMAL,
            lineterminator="\n",
        )
        return
    lines = [sep.join(frame.columns)] if header else []
    for row in frame.itertuples(index=False):
        for value in row:
            if sep in value or "\n" in value:
                raise ValueError(f"{path}: value {value!r} holds the separator {sep!r}")
        lines.append(sep.join(row))
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


def write_table_file(
    frame: pd.DataFrame, key: str, spec: TableFile, directory: Path, seps: dict[str, str]
) -> None:
    """Schema-named columns as one file of a published layout (inverse of the reader's
    renames, flag columns and derived columns; columns the schema does not use are
    written empty)."""
    inverse = {schema_name: published for published, schema_name in spec.rename.items()}
    sources = {source: (new, pattern) for new, (source, pattern) in spec.derive.items()}
    plain = [c for c in frame.columns if c not in spec.derive and c != spec.flags_into]
    if spec.columns is not None:
        names = list(spec.columns)
    else:
        names = [inverse.get(plain[0], plain[0]), *sources, *(inverse.get(c, c) for c in plain[1:])]
    out: dict[str, list[str]] = {}
    for published in names:
        column = spec.rename.get(published, published)
        if column in sources:
            new, pattern = sources[column]
            out[published] = [
                derive_source(column, k, v, pattern)
                for k, v in zip(frame[key], frame[new], strict=True)
            ]
        elif column in frame.columns:
            out[published] = [cell(v, seps.get(column, "|")) for v in frame[column]]
        else:
            out[published] = [""] * len(frame)
    if spec.flags_into is not None:
        tokens = sorted({str(t) for row in frame[spec.flags_into] for t in row})
        assert spec.flags_from is not None  # a flags column needs its position
        for i in range(len(out), spec.flags_from):
            out[f"_{i}"] = [""] * len(frame)
        for name in tokens:
            out[name] = ["1" if name in map(str, row) else "0" for row in frame[spec.flags_into]]
        if spec.flag_names_file is not None:
            lines = [f"{name}{spec.flag_names_sep}{i}" for i, name in enumerate(tokens)]
            (directory / spec.flag_names_file).write_text(
                "\n".join(lines) + "\n\n", encoding=spec.encoding
            )
    write_text(
        pd.DataFrame(out),
        directory / spec.file,
        sep=spec.sep,
        header=spec.header,
        encoding=spec.encoding,
    )


def derive_source(column: str, key: Any, value: Any, pattern: str) -> str:
    """Text from which `pattern`'s first group captures `value` (e.g. a name ending in
    "(1994)"): the pattern with its group replaced by the value, made literal."""
    stem = f"{column.capitalize()} {key}, The"
    if cell(value) == "":
        return stem
    prefix, suffix = _around_group(pattern)
    for text in dict.fromkeys([cell(value), str(round(float(value)))]):
        candidate = f"{stem} {_literal(prefix)}{text}{_literal(suffix)}"
        match = re.search(pattern, candidate)
        if match and match.group(1) == text:
            return candidate
    raise ValueError(f"cannot write {value!r} so that {pattern!r} derives it from {column!r}")


def _around_group(pattern: str) -> tuple[str, str]:
    """The pattern before and after its first capture group."""
    i, depth, start = 0, 0, -1
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            if start < 0 and not pattern.startswith("(?", i):
                start, depth = i, 0
            if start >= 0:
                depth += 1
        elif char == ")" and start >= 0:
            depth -= 1
            if depth == 0:
                return pattern[:start], pattern[i + 1 :]
        i += 1
    raise ValueError(f"pattern {pattern!r} has no capture group")


def _literal(fragment: str) -> str:
    fragment = re.sub(
        r"\\s[*+?]?|\\b|[\^$]",
        lambda m: " " if m.group().startswith(r"\s") and not m.group().endswith(("*", "?")) else "",
        fragment,
    )
    return re.sub(r"\\(.)", r"\1", fragment)
