"""Fitting, saving and applying the user and item workflows.

Both workflows are fit on the training split only (rows weighted by how often a user or
item occurs there), saved with `Workflow.save`, and loaded unchanged by the serving
stages. Categorify maps nulls to index 1 and unseen values to index 2 (index 0 is
padding), so unknown users and items are served, not rejected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import nvtabular as nvt
import pandas as pd
from merlin.io import Dataset
from merlin.schema import Tags
from nvtabular import ops

from recsys.contract import (
    FEATURE_SPEC_FILE,
    ITEM_WORKFLOW_DIR,
    PAD_INDEX,
    USER_WORKFLOW_DIR,
    FeatureSpec,
)
from recsys.schema import FeatureSchema
from workflows.build import build_workflow

if TYPE_CHECKING:
    from distributed import Client

    from datagen import SplitData


def spec_from_workflow(workflow: nvt.Workflow) -> FeatureSpec:
    """The models' input layout, read from the fitted workflow's tagged output schema."""
    categorical, cardinalities, widths, continuous = [], [], [], []
    for name, column in workflow.output_schema.column_schemas.items():
        if Tags.CATEGORICAL in column.tags:
            categorical.append(name)
            cardinalities.append(int(column.int_domain.max) + 1)
            widths.append(int(column.value_count.max) if Tags.LIST in column.tags else 1)
        elif Tags.CONTINUOUS in column.tags:
            continuous.append(name)
    return FeatureSpec(tuple(categorical), tuple(cardinalities), tuple(continuous), tuple(widths))


def training_rows(split: SplitData, schema: FeatureSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """User and item feature rows as they occur in the training interactions (no leakage)."""
    user_id, item_id = schema.users.id, schema.items.id
    users = split.train[[user_id]].merge(split.users, on=user_id, how="left")
    items = split.train[[item_id]].merge(split.items, on=item_id, how="left")
    return users, items


def _dataset(frame: pd.DataFrame, npartitions: int) -> Dataset:
    return Dataset(frame, cpu=True, npartitions=npartitions)


@dataclass
class FittedWorkflows:
    user: nvt.Workflow
    item: nvt.Workflow

    @property
    def user_spec(self) -> FeatureSpec:
        return spec_from_workflow(self.user)

    @property
    def item_spec(self) -> FeatureSpec:
        return spec_from_workflow(self.item)

    def save(self, directory: Path) -> None:
        for workflow, name in ((self.user, USER_WORKFLOW_DIR), (self.item, ITEM_WORKFLOW_DIR)):
            workflow.save(directory / name)
            spec = spec_from_workflow(workflow)
            (directory / name / FEATURE_SPEC_FILE).write_text(spec.to_json())

    @classmethod
    def load(cls, directory: Path) -> FittedWorkflows:
        return cls(
            user=nvt.Workflow.load(str(directory / USER_WORKFLOW_DIR)),
            item=nvt.Workflow.load(str(directory / ITEM_WORKFLOW_DIR)),
        )


def fit_workflows(
    split: SplitData,
    schema: FeatureSchema,
    work_dir: Path,
    client: Client | None = None,
    npartitions: int = 1,
) -> FittedWorkflows:
    """Fit both workflows on the training split; with `client`, on a Dask cluster."""
    user_rows, item_rows = training_rows(split, schema)
    user_wf = build_workflow(schema.users, "user", client)
    item_wf = build_workflow(schema.items, "item", client)
    # Categorify writes its vocabularies under the current directory unless told where.
    _set_category_paths(user_wf, work_dir / "categories_user")
    _set_category_paths(item_wf, work_dir / "categories_item")
    user_wf.fit(_dataset(user_rows, npartitions))
    item_wf.fit(_dataset(item_rows, npartitions))
    return FittedWorkflows(user=user_wf, item=item_wf)


def _set_category_paths(workflow: nvt.Workflow, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for node in iter_nodes(workflow.output_node):
        if isinstance(node.op, ops.Categorify):
            node.op.out_path = str(path)


def iter_nodes(node: Any) -> Iterator[Any]:
    seen: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(current.parents_with_dependencies)


def transform(workflow: nvt.Workflow, frame: pd.DataFrame) -> pd.DataFrame:
    """Apply a fitted workflow to an in-memory frame.

    NVTabular 23.08's Categorify on the CPU sets null codes by position on an array indexed
    by row label: a frame with nulls and any index but 0..n-1 raises IndexError (or worse,
    writes the wrong rows), so the frame is re-indexed first.
    """
    return workflow.transform(frame.reset_index(drop=True))


def transform_dataset(
    workflow: nvt.Workflow, frame: pd.DataFrame, npartitions: int = 1
) -> pd.DataFrame:
    """Apply a fitted workflow through a merlin Dataset (the offline/Dask path)."""
    return (
        workflow.transform(_dataset(frame, npartitions)).to_ddf().compute().reset_index(drop=True)
    )


def pad_lists(lists: Any, width: int) -> np.ndarray:
    """Ragged lists of token indices -> int64 [N, width], truncated, padded with PAD_INDEX."""
    rows = [np.asarray(row, dtype=np.int64)[:width] for row in lists]
    out = np.full((len(rows), width), PAD_INDEX, dtype=np.int64)
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    if len(rows) and lengths.sum():
        mask = np.arange(width)[None, :] < lengths[:, None]
        out[mask] = np.concatenate(rows)
    return out


def stack_features(frame: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The (categorical int64 [N, width], continuous float32 [N, n]) matrices, spec order."""
    parts = [
        pad_lists(frame[name], width) if width > 1 else
        frame[name].to_numpy(dtype=np.int64).reshape(-1, 1)
        for name, width in zip(spec.categorical, spec.widths, strict=True)
    ]  # fmt: skip
    categorical = np.hstack(parts) if parts else np.zeros((len(frame), 0), dtype=np.int64)
    continuous = frame[list(spec.continuous)].to_numpy(dtype=np.float32)
    return categorical, continuous
