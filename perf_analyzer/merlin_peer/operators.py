"""The adapter operators the peer's graph needs beside merlin-systems 23.08's own; each
class says why merlin-systems needs it.

Defined at module level (not inside a function) so that cloudpickle stores them by
reference: the executor model imports this module (PYTHONPATH holds the project root)
instead of carrying a copy of their code in ensemble.pkl.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pandas as pd
import torch
from merlin.dag import BaseOperator, ColumnSelector, DataFormats
from merlin.schema import ColumnSchema, Schema
from merlin.table import TensorTable

from recsys.contract import (
    CATALOG_FILE,
    HISTORY_FILE,
    REQUEST_USER_ID,
    USER_TABLE_FILE,
    Catalog,
    FeatureSpec,
    History,
    history_matrix,
    row_of_id,
)

# The names the peer's graph gives the tensors between operators (ours, not Merlin's:
# PredictPyTorch takes whatever the schemas say).
USER_CATEGORICAL, USER_CONTINUOUS = "user_categorical", "user_continuous"
ITEM_CATEGORICAL, ITEM_CONTINUOUS = "item_categorical", "item_continuous"
USER_HISTORY = "user_history"
QUERY, CLICK, CANDIDATE_ITEM_ID = "query", "click", "item_id"
# QueryFaiss' output column (merlin/systems/dag/ops/faiss.py).
CANDIDATE_ROWS = "candidate_ids"
# SoftmaxSampling's output names (merlin/systems/dag/ops/softmax_sampling.py).
ORDERED_IDS, ORDERED_SCORES = "ordered_ids", "ordered_scores"

Loaded = TypeVar("Loaded")


def id_column(transformable: Any, name: str) -> np.ndarray:
    """One int64 id per row, whatever shape the tensor arrived in over BLS."""
    return np.asarray(transformable[name].values, np.int64).reshape(-1)


class TensorTableOperator(BaseOperator):
    """An adapter whose output columns follow from its own settings, never from its input:
    one `output_schema()` instead of merlin-dag's four-argument hook, numpy tables in and
    out (merlin-dag converts to the format an operator declares)."""

    def output_schema(self) -> Schema:
        raise NotImplementedError

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        return self.output_schema()

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE


class ArtifactOperator(TensorTableOperator, Generic[Loaded]):
    """An adapter serving one file of the project's model set. `Ensemble.export` copies the
    file next to ensemble.pkl (`save_artifacts`) and the executor reads it back from there
    (`load_artifacts`); what was read stays out of the pickle, which holds only settings."""

    artifact_file: ClassVar[str]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = str(path)
        self._loaded: Loaded | None = self.read(path)

    def read(self, path: Path) -> Loaded:
        raise NotImplementedError

    @property
    def loaded(self) -> Loaded:
        # Unpickled operators have no `_loaded` until the executor calls load_artifacts.
        loaded = getattr(self, "_loaded", None)
        assert loaded is not None, "load_artifacts was not called"
        return loaded

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}

    def save_artifacts(self, artifact_path: str) -> None:
        shutil.copy2(self.path, Path(artifact_path) / self.artifact_file)

    def load_artifacts(self, artifact_path: str) -> None:
        # merlin-dag's Graph passes "" when the graph runs in-process: the original file.
        path = Path(artifact_path) / self.artifact_file if artifact_path else Path(self.path)
        self._loaded = self.read(path)


@dataclass(frozen=True)
class UserRows:
    ids: np.ndarray  # sorted user ids
    columns: dict[str, np.ndarray]  # per feature: one value per id, then the missing row


class UserFeatureLookup(ArtifactOperator[UserRows]):
    """user_id -> the raw user row the saved workflow expects.

    Why: Merlin's example reads user features with `QueryFeast`, which needs a Feast
    feature store; the project ships the user table with the model set instead. This is
    the in-memory stand-in (one vectorised binary search, as the project's own stage does).

    Nulls: Triton's BYTES tensors cannot carry a null, and the TransformWorkflow model
    receives its input over BLS as Triton tensors, so a missing string feature is sent as
    "" (Categorify maps it to the out-of-vocabulary index, where the project's stage maps it
    to the null index). Unknown users get that same all-missing row. Multi-hot user features
    would need `__values/__offsets` pairs and are refused.
    """

    artifact_file = USER_TABLE_FILE

    def __init__(self, users_path: Path, input_schema: Schema, id_column: str) -> None:
        for name, column in input_schema.column_schemas.items():
            if column.is_list:
                raise NotImplementedError(
                    f"user feature {name!r} is a list: the peer sends only scalar features"
                )
        self.workflow_input = input_schema
        self.id_column = id_column
        super().__init__(users_path)

    def read(self, path: Path) -> UserRows:
        users = pd.read_parquet(path).sort_values(self.id_column, kind="stable")
        columns = {}
        for name, column in self.workflow_input.column_schemas.items():
            if name == self.id_column:
                continue
            values = users[name]
            if column.dtype.element_type.value == "object" or values.dtype == object:
                filled = values.astype(object).where(values.notna(), "").astype(str)
                columns[name] = np.append(filled.to_numpy(object), np.array([""], object))
            else:
                dtype = np.dtype(column.dtype.to_numpy)
                columns[name] = np.append(values.to_numpy(dtype), np.array([np.nan], dtype))
        return UserRows(users[self.id_column].to_numpy(np.int64), columns)

    def output_schema(self) -> Schema:
        return self.workflow_input

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        users = self.loaded
        user_ids = id_column(transformable, REQUEST_USER_ID)
        rows = row_of_id(users.ids, user_ids)  # len(ids) for unknown users: the missing row
        columns = {name: values[rows] for name, values in users.columns.items()}
        columns[self.id_column] = user_ids
        return TensorTable({name: columns[name] for name in self.workflow_input.column_names})


class UserHistoryLookup(ArtifactOperator[History]):
    """user_id -> the query tower's history input: the user's latest stored interactions
    (history.npz, shipped with the model set) as `recsys.contract.history_matrix` lays
    them out for the project's retrieval stage.

    Why: the project's query tower pools each user's recent items; merlin-systems has no
    operator for per-user history (Merlin's example reads it from Feast like any feature).
    Added to the graph only when the query tower's forward() takes `user_history`.
    """

    artifact_file = HISTORY_FILE

    def __init__(self, history_path: Path, length: int) -> None:
        self.length = length
        super().__init__(history_path)

    def read(self, path: Path) -> History:
        return History.load(path)

    def output_schema(self) -> Schema:
        return Schema([ColumnSchema(USER_HISTORY, dtype=np.int64, dims=(None, self.length))])

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        user_ids = id_column(transformable, REQUEST_USER_ID)
        return TensorTable({USER_HISTORY: history_matrix(self.loaded, user_ids, self.length)})


class ItemFeatureLookup(ArtifactOperator[Catalog]):
    """QueryFaiss's candidate_ids (catalog rows) -> raw item ids and item feature tensors.

    Why: Merlin's example fetches item features with `QueryFeast`; the project precomputes
    the item workflow's output for the whole catalog (catalog.npz), so this is an array
    lookup, one row per candidate as Merlin's graphs have it.
    """

    artifact_file = CATALOG_FILE

    def __init__(self, catalog_path: Path) -> None:
        super().__init__(catalog_path)
        # Kept as settings: the graph asks for the output schema after unpickling too.
        self.widths = (self.loaded.categorical.shape[1], self.loaded.continuous.shape[1])

    def read(self, path: Path) -> Catalog:
        return Catalog.load(path)

    def output_schema(self) -> Schema:
        categorical, continuous = self.widths
        return Schema(
            [
                ColumnSchema(CANDIDATE_ITEM_ID, dtype=np.int64, dims=(None,)),
                ColumnSchema(ITEM_CATEGORICAL, dtype=np.int64, dims=(None, categorical)),
                ColumnSchema(ITEM_CONTINUOUS, dtype=np.float32, dims=(None, continuous)),
            ]
        )

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        catalog = self.loaded
        rows = id_column(transformable, CANDIDATE_ROWS)
        # faiss pads with -1 when the index holds fewer items than asked for.
        rows = rows[rows >= 0]
        return TensorTable(
            {
                CANDIDATE_ITEM_ID: catalog.item_ids[rows].astype(np.int64),
                ITEM_CATEGORICAL: catalog.categorical[rows].astype(np.int64),
                ITEM_CONTINUOUS: catalog.continuous[rows].astype(np.float32),
            }
        )


class UserFeatureTensors(TensorTableOperator):
    """The workflow's output columns -> the two matrices the models were trained on.

    Why: the project's TorchScript models take (user_categorical [B, W], user_continuous
    [B, n]) as two tensors, while `TransformWorkflow` outputs one column per feature and
    `PredictPyTorch` passes columns through unchanged. Stacking them here keeps the saved
    models as trained (the same files the project serves).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.spec = spec

    def output_schema(self) -> Schema:
        return Schema(
            [
                ColumnSchema(USER_CATEGORICAL, dtype=np.int64,
                             dims=(None, self.spec.categorical_width)),
                ColumnSchema(USER_CONTINUOUS, dtype=np.float32,
                             dims=(None, len(self.spec.continuous))),
            ]
        )  # fmt: skip

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        parts = [
            np.asarray(transformable[name].values, np.int64).reshape(-1, width)
            for name, width in zip(self.spec.categorical, self.spec.widths, strict=True)
        ]
        continuous = [
            np.asarray(transformable[name].values, np.float32).reshape(-1, 1)
            for name in self.spec.continuous
        ]
        rows = len(parts[0]) if parts else len(continuous[0])
        return TensorTable(
            {
                USER_CATEGORICAL: np.hstack(parts) if parts else np.zeros((rows, 0), np.int64),
                USER_CONTINUOUS: (
                    np.hstack(continuous) if continuous else np.zeros((rows, 0), np.float32)
                ),
            }
        )


class TopKByScore(BaseOperator):
    """Candidates sorted by score, best first, cut to top_k: the deterministic ordering.

    Why: merlin-systems 23.08's only ordering operator is `SoftmaxSampling`, which samples
    (and weighs by exp(T·s)/sum(s), not a softmax); a plain sort is what the project serves
    without `temperature`, and it makes the peer's answer comparable item for item. Same
    inputs and outputs as SoftmaxSampling (parent: ids; dependency: relevance column), so
    it cannot use TensorTableOperator: its output dtypes follow its inputs.
    """

    def __init__(self, relevance_col: Any, topk: int) -> None:
        from merlin.dag.node import Node

        self.relevance_col = Node.construct_from(relevance_col)
        self.topk = topk
        self._input_col_name: str | None = None
        self._relevance_col_name: str | None = None
        super().__init__()

    @property
    def dependencies(self) -> Any:
        return self.relevance_col

    def compute_input_schema(
        self,
        root_schema: Schema,
        parents_schema: Schema,
        deps_schema: Schema,
        selector: ColumnSelector,
    ) -> Schema:
        input_schema = super().compute_input_schema(
            root_schema, parents_schema, deps_schema, selector
        )
        self._input_col_name = parents_schema.column_names[0]
        self._relevance_col_name = deps_schema.column_names[0]
        return input_schema

    def compute_output_schema(
        self,
        input_schema: Schema,
        col_selector: ColumnSelector,
        prev_output_schema: Schema | None = None,
    ) -> Schema:
        return Schema(
            [
                ColumnSchema(ORDERED_IDS, dtype=input_schema[self._input_col_name].dtype,
                             dims=(None, 1)),
                ColumnSchema(ORDERED_SCORES,
                             dtype=input_schema[self._relevance_col_name].dtype, dims=(None, 1)),
            ]
        )  # fmt: skip

    def transform(self, col_selector: ColumnSelector, transformable: Any) -> Any:
        ids = transformable[self._input_col_name].values.reshape(-1)
        scores = transformable[self._relevance_col_name].values.reshape(-1)
        order = np.argsort(-scores, kind="stable")[: self.topk]
        return type(transformable)(
            {ORDERED_IDS: ids[order].reshape(1, -1), ORDERED_SCORES: scores[order].reshape(1, -1)}
        )


class PerRowRanking(torch.nn.Module):
    """The project's ranking model in Merlin's row layout: one (user, candidate) pair per
    row, [N, W] inputs -> [N, 1] click probability.

    Why: the project's TorchScript scorer takes item tensors with a candidate axis
    ([B, C, W]). Merlin's graph has one row per candidate after `UnrollFeatures`, so
    [N, 1, W] would do, but merlin-core 23.08 cannot describe a 3-D column to Triton:
    `ColumnSchema.with_properties` (called by `PredictPyTorch.__init__` on every input)
    rebuilds the shape from `value_count`, which keeps one inner dimension, so dims
    (None, 1, W) are exported as [-1, 1] and the BLS request's shape is refused. This
    wrapper adds the candidate axis inside TorchScript; the scorer's weights are unchanged.
    """

    def __init__(self, scorer: torch.nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(
        self,
        user_categorical: torch.Tensor,
        user_continuous: torch.Tensor,
        item_categorical: torch.Tensor,
        item_continuous: torch.Tensor,
    ) -> torch.Tensor:
        return self.scorer(
            user_categorical, user_continuous,
            item_categorical.unsqueeze(1), item_continuous.unsqueeze(1),
        )  # fmt: skip
