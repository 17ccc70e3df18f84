"""A fitted NVTabular workflow applied with plain numpy, for the serving hot path.

`Workflow.transform` costs ~10-15 ms per call on the CPU whatever the row count (graph
execution, pandas frame building), which dominates a recommendation request. The fitted
statistics themselves are tiny: vocabularies, hash bucket counts, means and standard
deviations. `CompiledWorkflow` reads them from the saved workflow and applies the same
arithmetic to numpy arrays. It supports exactly the operators our workflows use and
refuses any other at load time, so a new operator cannot be silently skipped;
tests/test_compiled_workflow.py checks parity with `Workflow.transform`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import nvtabular as nvt
import pandas as pd
from merlin.dag import ColumnSelector
from nvtabular import ops

from recsys.contract import NULL_INDEX, OOV_INDEX, FeatureSpec
from workflows.fitted import pad_lists
from workflows.ops import PositionIndependentHashBucket

ColumnFn = Callable[[np.ndarray], np.ndarray]
# Operators that only add schema tags or route columns: no effect on values.
PASSTHROUGH = (ops.AddTags, ops.TagAsUserFeatures, ops.TagAsUserID, ops.TagAsItemFeatures,
               ops.TagAsItemID)  # fmt: skip
# ListSlice(0, n) truncates a list column: `pad_lists` does it when the tokens are stacked.


class UnsupportedOperatorError(TypeError):
    """The workflow uses an operator CompiledWorkflow cannot reproduce."""


def _is_null(values: np.ndarray) -> np.ndarray:
    return pd.isna(values)


def _categorify(vocabulary_path: str, column: str) -> ColumnFn:
    # Row labels of Categorify's saved vocabulary are the codes it assigns.
    vocabulary = pd.read_parquet(vocabulary_path)[column].dropna()
    known = vocabulary.to_numpy()
    # A dict, not pandas.Index.get_indexer: serving encodes a few rows per call, where the
    # Index's fixed cost per call (~50 us) was 10% of the user_features stage (py-spy).
    code_of = dict(zip(known.tolist(), vocabulary.index.to_numpy(dtype=np.int64).tolist(),
                       strict=True))  # fmt: skip
    numeric = known.dtype.kind in "iuf"

    def encode(values: np.ndarray) -> np.ndarray:
        nulls = _is_null(values)
        if numeric and not nulls.any():
            values = values.astype(known.dtype)  # "3" or 3.0 finds the code of 3
        out = np.fromiter((code_of.get(v, OOV_INDEX) for v in values.tolist()),
                          dtype=np.int64, count=len(values))  # fmt: skip
        return np.where(nulls, NULL_INDEX, out).astype(np.int64)

    return encode


def _hash_bucket(op: PositionIndependentHashBucket, column: str) -> ColumnFn:
    buckets = op.num_buckets if isinstance(op.num_buckets, int) else op.num_buckets[column]

    def hash_values(values: np.ndarray) -> np.ndarray:
        hashed = pd.util.hash_array(values.astype(object), categorize=False) % np.uint64(buckets)
        return hashed.astype(np.int64)

    return hash_values


def _column_function(op: Any, column: str) -> ColumnFn | None:
    """The numpy equivalent of `op` on one column (None: no effect on values)."""
    if isinstance(op, PASSTHROUGH) or type(op).__name__ in ("SelectionOp", "ConcatColumns"):
        return None
    if isinstance(op, ops.ListSlice):
        if op.start != 0:
            raise UnsupportedOperatorError(f"ListSlice must start at 0 (column {column!r})")
        return None
    if isinstance(op, ops.Categorify):
        return _categorify(op.categories[column], column)
    if isinstance(op, PositionIndependentHashBucket):
        return _hash_bucket(op, column)
    if isinstance(op, ops.Normalize):
        mean, std = float(op.means[column]), float(op.stds[column])
        return lambda v: (v.astype(np.float64) - mean) / std if std > 0 else v - mean
    if isinstance(op, ops.FillMissing) and not op.add_binary_cols:
        fill = op.fill_val
        return lambda v: np.where(_is_null(v), fill, v)
    if isinstance(op, ops.LogOp):
        return lambda v: np.log(v.astype(np.float32) + 1)
    raise UnsupportedOperatorError(
        f"CompiledWorkflow cannot apply {type(op).__name__} (column {column!r}); "
        "serve this workflow through Workflow.transform or add the operator"
    )


def _chains(workflow: nvt.Workflow) -> dict[str, list[Any]]:
    """For each output column, its operators from input to output."""
    chains: dict[str, list[Any]] = {}

    def walk(node: Any, column: str, trail: list[Any]) -> None:
        trail = [node.op, *trail] if node.op is not None else trail
        parents = [
            p for p in node.parents_with_dependencies if column in p.output_schema.column_names
        ]
        if not parents:
            chains[column] = trail
            return
        if len(parents) > 1:
            raise UnsupportedOperatorError(f"column {column!r} is built from several branches")
        walk(parents[0], column, trail)

    for column in workflow.output_schema.column_names:
        walk(workflow.output_node, column, [])
    return chains


@dataclass
class CompiledWorkflow:
    spec: FeatureSpec
    functions: dict[str, list[ColumnFn]]

    @classmethod
    def from_workflow(cls, workflow: nvt.Workflow, spec: FeatureSpec) -> CompiledWorkflow:
        functions = {
            column: [f for op in chain if (f := _column_function(op, column)) is not None]
            for column, chain in _chains(workflow).items()
        }
        missing = set(spec.categorical + spec.continuous) - set(functions)
        if missing:
            raise UnsupportedOperatorError(f"no operator chain found for {sorted(missing)}")
        return cls(spec, functions)

    def transform(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw input columns -> (categorical int64 [N, width], continuous float32 [N, n_cont]).

        A multi-hot column arrives as an object array of token lists: its tokens are
        encoded flat, then truncated and padded to the column's width.
        """

        def apply(name: str, values: np.ndarray) -> np.ndarray:
            for function in self.functions[name]:
                values = function(values)
            return values

        n = len(next(iter(columns.values())))
        categorical = np.empty((n, self.spec.categorical_width), dtype=np.int64)
        offsets = self.spec.offsets()
        for name, width, start in zip(self.spec.categorical, self.spec.widths, offsets,
                                      strict=True):  # fmt: skip
            if width == 1:
                categorical[:, start] = apply(name, columns[name])
                continue
            lists = columns[name]
            lengths = np.fromiter((len(row) for row in lists), dtype=np.int64, count=n)
            flat = np.empty(int(lengths.sum()), dtype=object)
            flat[:] = [token for row in lists for token in row]
            codes = apply(name, flat) if len(flat) else np.empty(0, dtype=np.int64)
            rows = np.split(codes, np.cumsum(lengths)[:-1]) if n else []
            categorical[:, start : start + width] = pad_lists(rows, width)
        continuous = np.empty((n, len(self.spec.continuous)), dtype=np.float32)
        for i, name in enumerate(self.spec.continuous):
            continuous[:, i] = apply(name, columns[name])
        return categorical, continuous


__all__ = ["ColumnSelector", "CompiledWorkflow", "UnsupportedOperatorError"]
