"""Stage 1, feature transform: user ids (+ overrides) -> the user workflow's output.

The user table shipped with the version is the feature-store stand-in: loaded once into
arrays sorted by id, looked up with a vectorised binary search. The saved workflow is
loaded unchanged; its fitted statistics are applied through `CompiledWorkflow` (numpy),
which tests hold equal to `Workflow.transform`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import nvtabular as nvt
import pandas as pd

from recsys.contract import (
    FEATURE_SPEC_FILE,
    SCHEMA_FILE,
    USER_TABLE_FILE,
    USER_WORKFLOW_DIR,
    FeatureSpec,
    read_schema,
    row_of_id,
)
from recsys.schema import Feature
from workflows.compiled import CompiledWorkflow
from workflows.fitted import stack_features

RawColumns = dict[str, np.ndarray]


def _null_of(feature: Feature) -> object:
    if feature.kind == "multi_hot":
        return []
    return np.nan if feature.kind == "continuous" else None


def _column(values: pd.Series, feature: Feature) -> np.ndarray:
    """A stored column as the array the lookup indexes, with a trailing null row."""
    if feature.kind == "continuous":
        return np.append(values.to_numpy(np.float32), np.float32(np.nan))
    out = np.empty(len(values) + 1, dtype=object)
    if feature.kind == "multi_hot":
        out[:-1] = [list(v) for v in values]
    else:
        out[:-1] = [None if pd.isna(v) else v for v in values]
    out[-1] = _null_of(feature)
    return out


class UserFeatureStage:
    def __init__(self, version_dir: Path) -> None:
        self.schema = read_schema(version_dir / SCHEMA_FILE)
        workflow_dir = version_dir / USER_WORKFLOW_DIR
        self.workflow = nvt.Workflow.load(str(workflow_dir))
        self.spec = FeatureSpec.from_json((workflow_dir / FEATURE_SPEC_FILE).read_text())
        self.compiled = CompiledWorkflow.from_workflow(self.workflow, self.spec)
        self.features = self.schema.users.features
        users = pd.read_parquet(version_dir / USER_TABLE_FILE)
        id_column = self.schema.users.id
        users = users.sort_values(id_column, kind="stable")
        self.ids = users[id_column].to_numpy(np.int64)
        # Row len(ids) of every column is the null row unknown users get.
        self.columns = {name: _column(users[name], f) for name, f in self.features.items()}
        known = users.dropna(subset=[n for n, f in self.features.items() if f.kind != "multi_hot"])
        if known.empty:
            raise ValueError(f"{version_dir / USER_TABLE_FILE} has no user without nulls")
        self._sentinel = self.raw_columns(known[id_column].to_numpy(np.int64)[:1])

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each id in the stored arrays; unknown ids get the null row."""
        return row_of_id(self.ids, user_ids)

    def raw_columns(self, user_ids: np.ndarray) -> RawColumns:
        """Stored raw features per user id; unknown users get nulls (served as OOV/null)."""
        user_ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        rows = self.rows_of(user_ids)
        columns = {name: values[rows] for name, values in self.columns.items()}
        columns[self.schema.users.id] = user_ids
        return columns

    def transform(self, raw: RawColumns) -> tuple[np.ndarray, np.ndarray]:
        """The workflow's fitted statistics applied with numpy (the serving hot path)."""
        return self.compiled.transform(raw)

    def transform_nvtabular(self, raw: RawColumns) -> tuple[np.ndarray, np.ndarray]:
        """The same transform through `Workflow.transform`: the reference for parity tests."""
        # NVTabular 23.08's Categorify fails on a frame whose column is entirely null (one
        # unknown user); a known row appended and dropped afterwards keeps every column typed.
        frame = pd.DataFrame({k: list(v) if v.dtype == object else v for k, v in raw.items()})
        sentinel = pd.DataFrame(
            {k: list(v) if v.dtype == object else v for k, v in self._sentinel.items()}
        )
        padded = pd.concat([frame, sentinel], ignore_index=True)
        categorical, continuous = stack_features(self.workflow.transform(padded), self.spec)
        return categorical[:-1], continuous[:-1]
