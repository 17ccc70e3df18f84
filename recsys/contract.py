"""Contracts between the pipeline's parts: artefact names, feature layouts, the catalog,
the ensemble's stages and the request tensors derived from the feature schema.

Bottom layer: imports only numpy and recsys.schema, so every package may import it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recsys.schema import Feature, FeatureSchema

# ---------------------------------------------------------------- names

ENSEMBLE_NAME = "recommender"
# Composing models in the order they must be loaded; the ensemble comes last because
# Triton refuses an ensemble whose steps are not loaded yet.
STAGE_MODEL_NAMES: tuple[str, ...] = (
    "user_features",
    "retrieval",
    "ranking",
    "reorder",
)
MODEL_LOAD_ORDER: tuple[str, ...] = (*STAGE_MODEL_NAMES, ENSEMBLE_NAME)

# The request input carrying the raw user id, whatever the schema calls its id column.
REQUEST_USER_ID = "user_id"

# Canonical interaction columns after reading (the user and item columns keep the
# schema's id names): seconds or row order, and the 0/1 label after the schema's rule.
TIMESTAMP = "timestamp"
LABEL = "label"

# Artefact files and directories.
USER_WORKFLOW_DIR = "user_workflow"
ITEM_WORKFLOW_DIR = "item_workflow"
FEATURE_SPEC_FILE = "feature_spec.json"
SCHEMA_FILE = "feature_schema.json"
QUERY_TOWER_FILE = "query_tower.pt"
RANKING_FILE = "ranking.pt"
# The libtorch backend's default file name, so a production image can switch the ranking
# model's config to `pytorch_libtorch` without moving files.
RANKING_MODEL_FILE = "model.pt"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_INDEX_FILE = "item_index.faiss"
CATALOG_FILE = "catalog.npz"
HISTORY_FILE = "history.npz"
USER_TABLE_FILE = "users.parquet"
METRICS_FILE = "metrics.json"
PROFILE_FILE = "reference_profile.json"

# Categorify's reserved indices (merlin-core 23.08): 0 padding, 1 null, 2 out-of-vocabulary.
PAD_INDEX = 0
NULL_INDEX = 1
OOV_INDEX = 2


# ---------------------------------------------------------------- feature layouts


@dataclass(frozen=True)
class FeatureSpec:
    """Column order, cardinalities and widths of one workflow's output, as models see it.

    The categorical tensor is [N, sum(widths)]: a single-valued column takes one slot, a
    multi-hot column `width` slots of token indices padded with PAD_INDEX.
    """

    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]
    continuous: tuple[str, ...]
    widths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.widths:
            object.__setattr__(self, "widths", (1,) * len(self.categorical))
        if not len(self.categorical) == len(self.cardinalities) == len(self.widths):
            raise ValueError("categorical, cardinalities and widths must have one entry each")

    @property
    def categorical_width(self) -> int:
        return sum(self.widths)

    def offsets(self) -> list[int]:
        return np.cumsum([0, *self.widths[:-1]]).astype(int).tolist()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        raw = json.loads(text)
        return cls(
            categorical=tuple(raw["categorical"]),
            cardinalities=tuple(int(c) for c in raw["cardinalities"]),
            continuous=tuple(raw["continuous"]),
            widths=tuple(int(w) for w in raw.get("widths", ())),
        )

    def describe(self) -> str:
        columns = ", ".join(
            f"{c}:{n}" + (f"x{w}" if w > 1 else "")
            for c, n, w in zip(self.categorical, self.cardinalities, self.widths, strict=True)
        )
        return f"[{columns}; {', '.join(self.continuous)}]"


# ---------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class Catalog:
    """The item catalog as served: raw ids and transformed features, one row per item."""

    item_ids: np.ndarray  # int64 [N]
    categorical: np.ndarray  # int64 [N, categorical_width]
    continuous: np.ndarray  # float32 [N, n_cont]
    # Training-popularity decile per item (0 = most impressed), for coverage monitoring.
    popularity_decile: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))

    def save(self, path: Path) -> None:
        np.savez(path, item_ids=self.item_ids, categorical=self.categorical,
                 continuous=self.continuous, popularity_decile=self.popularity_decile)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Catalog:
        with np.load(path) as arrays:
            return cls(arrays["item_ids"], arrays["categorical"], arrays["continuous"],
                       arrays["popularity_decile"])  # fmt: skip


def row_of_id(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each id in `sorted_ids` (ascending), or len(sorted_ids) where absent:
    one vectorised binary search, used by every id-keyed table served with a model set."""
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=np.int64)
    positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[positions] == ids, positions, len(sorted_ids))


class RowLookup:
    """Row of each id in an unsorted id array (-1 where unknown): one binary search over
    the ids sorted once. Not a pandas Index: its fixed cost per call (~50 us) dominates when
    a request looks up a few ids."""

    def __init__(self, ids: np.ndarray) -> None:
        self._order = np.argsort(ids, kind="stable")
        self._sorted = np.asarray(ids, dtype=np.int64)[self._order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self._sorted):
            return np.full(len(ids), -1, dtype=np.int64)
        positions = row_of_id(self._sorted, ids)
        found = positions < len(self._sorted)
        rows = self._order[np.minimum(positions, len(self._sorted) - 1)]
        return np.where(found, rows, -1).astype(np.int64)


@dataclass(frozen=True)
class History:
    """Each known user's latest training interactions, as catalog rows in time order.

    CSR layout: user `user_ids[i]`'s rows are `rows[offsets[i]:offsets[i + 1]]`.
    """

    user_ids: np.ndarray  # int64 [U], sorted
    offsets: np.ndarray  # int64 [U + 1]
    rows: np.ndarray  # int64 [offsets[-1]]

    def save(self, path: Path) -> None:
        np.savez(path, user_ids=self.user_ids, offsets=self.offsets, rows=self.rows)

    @classmethod
    def load(cls, path: Path) -> History:
        with np.load(path) as arrays:
            return cls(arrays["user_ids"], arrays["offsets"], arrays["rows"])

    def of(self, user_ids: np.ndarray) -> list[np.ndarray]:
        """Catalog rows each user consumed (empty for unknown users)."""
        # An absent user's position is len(user_ids): offsets[U]..offsets[U] is empty.
        positions = row_of_id(self.user_ids, user_ids).tolist()
        return [self.rows[self.offsets[p] : self.offsets[min(p + 1, len(self.user_ids))]]
                for p in positions]  # fmt: skip


def history_matrix(
    history: History,
    user_ids: np.ndarray,
    length: int,
    session_rows: list[np.ndarray] | None = None,
) -> np.ndarray:
    """[B, length] int64 query-tower input: each user's latest stored items followed by
    the request's own `session_rows` (newest last), as catalog row + 1, 0 padding on the
    left. Unknown users without session items get all zeros (the cold-user query)."""
    positions = row_of_id(history.user_ids, np.asarray(user_ids, dtype=np.int64))
    padded_offsets = np.append(history.offsets, history.offsets[-1])
    ends = padded_offsets[np.minimum(positions + 1, len(history.user_ids))]
    starts = np.maximum(padded_offsets[positions], ends - length)
    source = ends[:, None] - length + np.arange(length)[None, :]
    valid = source >= starts[:, None]
    stored = np.append(history.rows, 0)  # one spare slot keeps the gather in bounds
    matrix = np.where(valid, stored[np.maximum(source, 0)] + 1, 0).astype(np.int64)
    for i, rows in enumerate(session_rows or []):
        rows = rows[rows >= 0][-length:] + 1
        if len(rows):
            matrix[i] = np.concatenate([matrix[i, len(rows) :], rows])
    return matrix


def order_keys(
    like_probabilities: np.ndarray, retrieval_scores: np.ndarray | None, retrieval_weight: float
) -> np.ndarray:
    """The served order (descending): log P(like) from ranking plus `retrieval_weight` x
    the retrieval score, i.e. the log of expected positives. The reorder stage and the
    offline evaluation order with this one function."""
    keys = np.log(np.clip(like_probabilities, 1e-7, 1 - 1e-7))
    if retrieval_scores is not None and retrieval_weight:
        keys = keys + retrieval_weight * retrieval_scores
    return keys


# A candidate slot no item fills (filters removed more items than the catalog could spare).
NO_CANDIDATE = -1


def first_allowed(ranked: np.ndarray, excluded: list[np.ndarray], k: int) -> np.ndarray:
    """[B, K'] catalog rows, best first -> [B, k] positions in `ranked` of the first k rows
    of each that are not among its `excluded` rows, padded with NO_CANDIDATE when fewer
    remain. The retrieval stage and the offline evaluation filter with this one function."""
    allowed = ranked >= 0
    for i, drop in enumerate(excluded):
        if len(drop):
            allowed[i] &= ~np.isin(ranked[i], drop)
    # Stable sort of "not allowed" puts allowed positions first, in ranked order.
    order = np.argsort(~allowed, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(allowed, order, axis=1), order, NO_CANDIDATE)


def take_allowed(values: np.ndarray, positions: np.ndarray, fill: float | int) -> np.ndarray:
    """`values` [B, K'] at `positions` [B, k] (from first_allowed), `fill` where unfilled."""
    picked = np.take_along_axis(values, np.maximum(positions, 0), axis=1)
    return np.where(positions >= 0, picked, fill)


def read_schema(path: Path) -> FeatureSchema:
    return FeatureSchema.from_json(path.read_text())


# ---------------------------------------------------------------- request tensors


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton type name without the TYPE_ prefix: INT64, FP32, BYTES, INT32
    dims: tuple[int, ...]
    optional: bool = False


TRITON_DTYPES = {"string": "BYTES", "int64": "INT64", "float32": "FP32"}


def override_tensor(name: str, feature: Feature) -> Tensor:
    """The optional request input that overrides a user feature: typed from the schema; a
    multi-hot feature takes a list of tokens (empty strings pad ragged lists)."""
    dims = (-1,) if feature.kind == "multi_hot" else (1,)
    return Tensor(name, TRITON_DTYPES[feature.value_type], dims, optional=True)


def override_tensors(schema: FeatureSchema) -> tuple[Tensor, ...]:
    return tuple(override_tensor(name, feature) for name, feature in schema.user_overrides())
