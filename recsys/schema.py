"""The feature schema: one declarative file per data set drives the whole pipeline.

`config/schemas/<name>.yaml` declares the user and item tables (id column, features and
their kinds), the interactions table and its label, where the data comes from (the
layout of the files a user already has) and how demo data is synthesised. The NVTabular
workflows, the models' input layouts, the ensemble's request contract, server-side
validation, the synthetic generator, monitoring and the client all derive from it; no
other module names a feature.

Feature kinds:
  categorical  vocabulary (Categorify); values seen fewer than `min_frequency` times
               share the out-of-vocabulary index
  hashed       hashed into `buckets` (no vocabulary to grow: long-tailed ids, zip codes)
  continuous   normalised (optionally log1p first); missing values get the training mean
  multi_hot    a list of tokens (e.g. genres), at most `max_tokens`, pooled embedding
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "config" / "schemas"
FeatureKind = Literal["categorical", "hashed", "continuous", "multi_hot"]
ValueType = Literal["string", "int64", "float32"]
LABEL_RULE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
RULE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq,
    "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}  # fmt: skip
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names the request contract uses itself: a feature cannot take them.
RESERVED_NAMES = frozenset(
    {"top_k", "exclude_item_ids", "temperature", "history_item_ids", "filter_seen",
     "item_ids", "scores", "model_version", "timestamp", "label"}
)  # fmt: skip


class SchemaError(ValueError):
    """A schema file that cannot be used, naming the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticHints(_Strict):
    """How the planted-structure generator makes values of one feature (all optional)."""

    cardinality: int | None = Field(None, ge=1)  # distinct values (categorical, hashed, tokens)
    signal: float = Field(1.0, ge=0.0)  # how strongly the value follows the latent factors
    missing_rate: float | None = Field(None, ge=0.0, lt=1.0)
    skew: float = Field(0.0, ge=0.0)  # Zipf exponent of a long tail (0: none)
    mean: float = 0.0  # continuous: centre and spread (before an optional exp)
    spread: float = 1.0
    exponential: bool = False  # continuous: exp(value), a positive skewed quantity


class Feature(_Strict):
    kind: FeatureKind
    dtype: ValueType | None = None  # default: float32 for continuous, string otherwise
    nullable: bool = True
    min_frequency: int = Field(0, ge=0)  # categorical
    buckets: int | None = Field(None, ge=2)  # hashed
    log: bool = False  # continuous: log1p before normalising
    max_tokens: int | None = Field(None, ge=1)  # multi_hot
    separator: str = "|"  # multi_hot: how tokens are joined in text files
    range: tuple[float, float] | None = None  # numbers: valid override values
    max_length: int = Field(64, ge=1)  # strings: longest override in UTF-8 bytes
    overridable: bool = True  # user features: a request may send its own value
    monitored: bool = False  # user features: tracked for drift
    synthetic: SyntheticHints = SyntheticHints()

    @model_validator(mode="after")
    def _kind_fields(self) -> Feature:
        if self.kind == "hashed" and self.buckets is None:
            raise ValueError("a hashed feature needs `buckets`")
        if self.kind == "multi_hot" and self.max_tokens is None:
            raise ValueError("a multi_hot feature needs `max_tokens`")
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} must be [low, high] with low < high")
        if self.kind == "continuous":
            if self.dtype not in (None, "float32"):
                raise ValueError("a continuous feature has dtype float32")
        elif self.dtype == "float32":
            raise ValueError(f"a {self.kind} feature has dtype string or int64")
        if self.monitored and self.kind == "multi_hot":
            raise ValueError("multi_hot features are not monitored (token lists have no bins)")
        for field_name, kinds in (("buckets", {"hashed"}), ("max_tokens", {"multi_hot"})):
            if getattr(self, field_name) is not None and self.kind not in kinds:
                raise ValueError(f"`{field_name}` applies to {sorted(kinds)} features only")
        if self.range is not None and self.value_type == "string":
            raise ValueError("`range` applies to numbers (continuous or int64 features)")
        return self

    @property
    def value_type(self) -> ValueType:
        return self.dtype or ("float32" if self.kind == "continuous" else "string")


class Entity(_Strict):
    """The user or the item table: file stem, id column, features in declaration order."""

    table: str
    id: str
    features: dict[str, Feature]

    def names(self, *kinds: FeatureKind) -> list[str]:
        return [n for n, f in self.features.items() if not kinds or f.kind in kinds]


class Label(_Strict):
    column: str
    rule: str | None = None  # e.g. ">= 4"; without it the column holds 0/1

    @model_validator(mode="after")
    def _rule(self) -> Label:
        if self.rule is not None and not LABEL_RULE.match(self.rule):
            raise ValueError(f"label rule {self.rule!r} must be `<op> <number>`, e.g. '>= 4'")
        return self

    def describe(self) -> str:
        return f"{self.column} {self.rule}" if self.rule else f"{self.column} (0/1)"


class Interactions(_Strict):
    table: str
    user: str
    item: str
    timestamp: str | None = None  # without it, the file's row order is the time order
    label: Label


class TableFile(_Strict):
    """One delimited or parquet file of a published layout, read into named columns."""

    file: str
    sep: str = ","
    header: bool = True
    encoding: str = "utf-8"
    columns: list[str] | None = None  # names for a headerless file, in file order
    rename: dict[str, str] = {}  # published name -> schema name
    # Binary flag columns turned into one token-list column: the flags start at
    # `flags_from` (0-based) and their names are the first field of `flag_names_file`.
    flags_into: str | None = None
    flags_from: int | None = None
    flag_names_file: str | None = None
    flag_names_sep: str = "|"
    # New columns captured by a regex from another column: name -> [source, pattern].
    derive: dict[str, tuple[str, str]] = {}


class Release(_Strict):
    """One published layout (e.g. ml-100k); recognised by its files. A release without a
    users file has ids only: its users' features are null (they must be nullable)."""

    users: TableFile | None = None
    items: TableFile
    interactions: TableFile


class Source(_Strict):
    """How a data directory is read.

    tables        users/items/interactions files (parquet or CSV) named by the tables
    releases      one of several published layouts, picked by which files exist
    single_table  one file with user and item features inline on every interaction row
                  (Ali-CCP's raw layout); the latest row per id gives its features
    """

    format: Literal["tables", "releases", "single_table"] = "tables"
    releases: dict[str, Release] = {}
    file: str | None = None  # single_table: the file (stem; parquet or CSV)

    @model_validator(mode="after")
    def _format_fields(self) -> Source:
        if self.format == "releases" and not self.releases:
            raise ValueError("format `releases` needs at least one release")
        if self.format == "single_table" and not self.file:
            raise ValueError("format `single_table` needs `file`")
        return self


class Synthetic(_Strict):
    """Demo and test data: `planted` (latent factors drive features and labels) or a data
    set generator of merlin.datasets (`merlin`, e.g. aliccp-raw)."""

    generator: Literal["planted", "merlin"] = "planted"
    dataset: str | None = None
    rows_per_user: int | None = Field(None, ge=1)  # merlin: rows generated per user


class FeatureSchema(_Strict):
    name: str
    description: str = ""
    users: Entity
    items: Entity
    interactions: Interactions
    source: Source = Source()
    synthetic: Synthetic = Synthetic()

    @model_validator(mode="after")
    def _names(self) -> FeatureSchema:
        seen: dict[str, str] = {}
        for where, entity in (("users", self.users), ("items", self.items)):
            for name in (entity.id, *entity.features):
                if not NAME.match(name):
                    raise ValueError(f"{where}: {name!r} is not a valid tensor name")
                if name in RESERVED_NAMES or (name == "user_id" and name != self.users.id):
                    raise ValueError(f"{where}: {name!r} is reserved by the request contract")
                if name in seen:
                    raise ValueError(f"{where}: {name!r} is declared twice (also in {seen[name]})")
                seen[name] = where
        for name, feature in self.items.features.items():
            if feature.monitored:
                raise ValueError(f"items: {name!r}: only user features are monitored")
        return self

    def fingerprint_payload(self) -> dict[str, Any]:
        """What must be equal for two model sets to serve the same contract."""
        return self.model_dump(mode="json", include={"users", "items", "interactions"})

    def to_json(self) -> str:
        # Not sorted: the declaration order of features is the order of the workflows'
        # columns and of the request's inputs.
        return json.dumps(self.model_dump(mode="json"), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSchema:
        return cls.model_validate(json.loads(text))

    def user_overrides(self) -> Iterator[tuple[str, Feature]]:
        """User features a request may override, in declaration order."""
        for name, feature in self.users.features.items():
            if feature.overridable:
                yield name, feature

    def monitored(self) -> dict[str, Feature]:
        return {n: f for n, f in self.users.features.items() if f.monitored}


def label_rule(label: Label) -> tuple[str, float] | None:
    """(operator, threshold) of a rule label, or None for a 0/1 column."""
    if label.rule is None:
        return None
    match = LABEL_RULE.match(label.rule)
    assert match is not None  # checked on load
    return match.group(1), float(match.group(2))


def differences(old: FeatureSchema, new: FeatureSchema) -> list[str]:
    """What differs between two schemas' contracts, feature by feature (empty: same)."""
    problems = []
    for side in ("users", "items"):
        a, b = getattr(old, side), getattr(new, side)
        if a.id != b.id:
            problems.append(f"{side}: id column {a.id!r} would become {b.id!r}")
        for name in sorted(set(a.features) | set(b.features)):
            if name not in b.features:
                problems.append(f"{side}: feature {name!r} is gone")
            elif name not in a.features:
                problems.append(f"{side}: feature {name!r} is new")
            elif a.features[name] != b.features[name]:
                before = a.features[name].model_dump(exclude={"synthetic"})
                after = b.features[name].model_dump(exclude={"synthetic"})
                changed = sorted(k for k in before if before[k] != after[k])
                if changed:
                    problems.append(f"{side}: feature {name!r} differs in {', '.join(changed)}")
        if list(a.features) != list(b.features) and set(a.features) == set(b.features):
            problems.append(f"{side}: features are declared in a different order")
    if old.interactions != new.interactions:
        problems.append("the interactions table or its label differs")
    return problems


def schema_path(name: str | os.PathLike[str]) -> Path:
    """A schema by name (config/schemas/<name>.yaml) or by path."""
    text = str(name)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return Path(text)
    return SCHEMAS_DIR / f"{text}.yaml"


def available_schemas() -> list[str]:
    return sorted(p.stem for p in SCHEMAS_DIR.glob("*.yaml"))


def load_schema(name: str | os.PathLike[str]) -> FeatureSchema:
    """Load and validate a schema; every problem names the file and the field."""
    path = schema_path(name)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise SchemaError(
            f"schema file {path} does not exist (shipped schemas: {available_schemas()})"
        ) from exc
    except yaml.YAMLError as exc:
        raise SchemaError(f"schema file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SchemaError(f"schema file {path} must hold a mapping at the top level")
    raw.setdefault("name", path.stem)
    try:
        return FeatureSchema.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            lines.append(f"  {where}: {error['msg']}")
        raise SchemaError(f"schema file {path} is invalid:\n" + "\n".join(lines)) from exc
