"""The user and item NVTabular workflows and the feature layout the models consume.

Both workflows are fit on the training split only (rows weighted by how often a user or
item occurs there), saved with `Workflow.save`, and loaded unchanged by the Triton
feature-transform model. Categorify maps nulls to index 1 and unseen values to index 2
(index 0 is padding), so unknown users and items are served, not rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import nvtabular as nvt
import pandas as pd
from merlin.io import Dataset
from merlin.schema import Tags
from nvtabular import ops

from recsys.datagen import SplitData
from recsys.settings import WorkflowSettings
from workflows.ops import PositionIndependentHashBucket

if TYPE_CHECKING:
    from distributed import Client

USER_WORKFLOW_DIR = "user_workflow"
ITEM_WORKFLOW_DIR = "item_workflow"
FEATURE_SPEC_FILE = "feature_spec.json"

# Categorify's reserved indices (merlin-core 23.08): 0 padding, 1 null, 2 out-of-vocabulary.
NULL_INDEX = 1
OOV_INDEX = 2


@dataclass(frozen=True)
class FeatureSpec:
    """Column order and cardinalities of one workflow's output, as the models see it."""

    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]
    continuous: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        raw = json.loads(text)
        return cls(
            categorical=tuple(raw["categorical"]),
            cardinalities=tuple(int(c) for c in raw["cardinalities"]),
            continuous=tuple(raw["continuous"]),
        )

    @classmethod
    def from_workflow(cls, workflow: nvt.Workflow) -> FeatureSpec:
        schema = workflow.output_schema
        categorical, cardinalities, continuous = [], [], []
        for name, column in schema.column_schemas.items():
            if Tags.CATEGORICAL in column.tags:
                categorical.append(name)
                cardinalities.append(int(column.int_domain.max) + 1)
            elif Tags.CONTINUOUS in column.tags:
                continuous.append(name)
        return cls(tuple(categorical), tuple(cardinalities), tuple(continuous))


def build_user_workflow(settings: WorkflowSettings, client: Client | None = None) -> nvt.Workflow:
    user_id = ["user_id"] >> ops.Categorify() >> ops.TagAsUserID()
    user_cats = ["country", "device"] >> ops.Categorify() >> ops.TagAsUserFeatures()
    # Zip codes have a long tail of values: hashing bounds the table, no vocabulary to grow.
    zipcode = (
        ["zipcode"]
        >> PositionIndependentHashBucket(settings.hash_buckets_zipcode)
        >> ops.AddTags([Tags.CATEGORICAL, Tags.USER])
    )
    # Normalize first, then fill with 0: missing values get the training mean. (FillMedian
    # is approximate on a Dask cluster, which would make distributed fits differ.)
    age = ["age"] >> ops.Normalize() >> ops.FillMissing(fill_val=0.0) >> ops.TagAsUserFeatures()
    return nvt.Workflow(user_id + user_cats + zipcode + age, client=client)


def build_item_workflow(settings: WorkflowSettings, client: Client | None = None) -> nvt.Workflow:
    item_id = ["item_id"] >> ops.Categorify() >> ops.TagAsItemID()
    category = ["category"] >> ops.Categorify() >> ops.TagAsItemFeatures()
    # Rare brands share the out-of-vocabulary index: frequency capping for a long tail.
    brand = (
        ["brand"]
        >> ops.Categorify(freq_threshold=settings.brand_freq_threshold)
        >> ops.TagAsItemFeatures()
    )
    price = (
        ["price"]
        >> ops.LogOp()
        >> ops.Normalize()
        >> ops.FillMissing(fill_val=0.0)
        >> ops.TagAsItemFeatures()
    )
    return nvt.Workflow(item_id + category + brand + price, client=client)


def training_rows(split: SplitData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """User and item feature rows as they occur in the training interactions (no leakage)."""
    users = split.train[["user_id"]].merge(split.users, on="user_id", how="left")
    items = split.train[["item_id"]].merge(split.items, on="item_id", how="left")
    return users, items


def _dataset(frame: pd.DataFrame, npartitions: int) -> Dataset:
    return Dataset(frame, cpu=True, npartitions=npartitions)


@dataclass
class FittedWorkflows:
    user: nvt.Workflow
    item: nvt.Workflow

    @property
    def user_spec(self) -> FeatureSpec:
        return FeatureSpec.from_workflow(self.user)

    @property
    def item_spec(self) -> FeatureSpec:
        return FeatureSpec.from_workflow(self.item)

    def save(self, directory: Path) -> None:
        for workflow, name in ((self.user, USER_WORKFLOW_DIR), (self.item, ITEM_WORKFLOW_DIR)):
            workflow.save(directory / name)
            spec = FeatureSpec.from_workflow(workflow)
            (directory / name / FEATURE_SPEC_FILE).write_text(spec.to_json())

    @classmethod
    def load(cls, directory: Path) -> FittedWorkflows:
        return cls(
            user=nvt.Workflow.load(str(directory / USER_WORKFLOW_DIR)),
            item=nvt.Workflow.load(str(directory / ITEM_WORKFLOW_DIR)),
        )


def fit_workflows(
    split: SplitData,
    settings: WorkflowSettings,
    work_dir: Path,
    client: Client | None = None,
    npartitions: int = 1,
) -> FittedWorkflows:
    """Fit both workflows on the training split; with `client`, on a Dask cluster."""
    user_rows, item_rows = training_rows(split)
    user_wf = build_user_workflow(settings, client)
    item_wf = build_item_workflow(settings, client)
    # Categorify writes its vocabularies under the current directory unless told where.
    _set_category_paths(user_wf, work_dir / "categories_user")
    _set_category_paths(item_wf, work_dir / "categories_item")
    user_wf.fit(_dataset(user_rows, npartitions))
    item_wf.fit(_dataset(item_rows, npartitions))
    return FittedWorkflows(user=user_wf, item=item_wf)


def _set_category_paths(workflow: nvt.Workflow, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for node in _iter_nodes(workflow.output_node):
        if isinstance(node.op, ops.Categorify):
            node.op.out_path = str(path)


def _iter_nodes(node: Any) -> Iterator[Any]:
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
    """Apply a fitted workflow to an in-memory frame (the serving path)."""
    return workflow.transform(frame)


def transform_dataset(
    workflow: nvt.Workflow, frame: pd.DataFrame, npartitions: int = 1
) -> pd.DataFrame:
    """Apply a fitted workflow through a merlin Dataset (the offline/Dask path)."""
    return (
        workflow.transform(_dataset(frame, npartitions)).to_ddf().compute().reset_index(drop=True)
    )


def stack_features(frame: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The (categorical int64, continuous float32) matrices the models take, in spec order."""
    categorical = frame[list(spec.categorical)].to_numpy(dtype=np.int64)
    continuous = frame[list(spec.continuous)].to_numpy(dtype=np.float32)
    return categorical, continuous
