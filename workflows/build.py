"""NVTabular workflows built from the feature schema: one operator chain per feature kind.

    id           Categorify >> TagAsUserID / TagAsItemID
    categorical  Categorify(freq_threshold=min_frequency) >> tags
    hashed       PositionIndependentHashBucket(buckets) >> tags
    continuous   [LogOp] >> Normalize >> FillMissing(0) >> tags   (missing -> training mean)
    multi_hot    Categorify >> ListSlice(0, max_tokens) >> tags   (padded by stack_features)

Every column is tagged with Merlin's tags (USER/ITEM, CATEGORICAL/CONTINUOUS, the id
tags), so the models read their input layout from the fitted workflow's output schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import nvtabular as nvt
from merlin.schema import Tags
from nvtabular import ops

from recsys.schema import Entity, Feature
from workflows.ops import PositionIndependentHashBucket

if TYPE_CHECKING:
    from distributed import Client

Side = Literal["user", "item"]


def _feature_chain(name: str, feature: Feature, side_tag: Tags) -> nvt.WorkflowNode:
    if feature.kind == "categorical":
        node = [name] >> ops.Categorify(freq_threshold=feature.min_frequency)
        return node >> ops.AddTags([Tags.CATEGORICAL, side_tag])
    if feature.kind == "hashed":
        # Long-tailed values: hashing bounds the table, no vocabulary to grow.
        node = [name] >> PositionIndependentHashBucket(feature.buckets)
        return node >> ops.AddTags([Tags.CATEGORICAL, side_tag])
    if feature.kind == "multi_hot":
        # ListSlice truncates; on the CPU (NVTabular 23.08) pad=True does not pad, so the
        # lists stay ragged here and stack_features pads them with Categorify's index 0.
        node = [name] >> ops.Categorify(freq_threshold=feature.min_frequency)
        node = node >> ops.ListSlice(0, feature.max_tokens)
        return node >> ops.AddTags([Tags.CATEGORICAL, Tags.LIST, side_tag])
    node = [name] >> ops.LogOp() if feature.log else [name]
    # Normalize first, then fill with 0: missing values get the training mean. (FillMedian
    # is approximate on a Dask cluster, which would make distributed fits differ.)
    node = node >> ops.Normalize() >> ops.FillMissing(fill_val=0.0)
    return node >> ops.AddTags([Tags.CONTINUOUS, side_tag])


def build_workflow(entity: Entity, side: Side, client: Client | None = None) -> nvt.Workflow:
    """The workflow for the user or item table: its id first, then each feature in the
    order the schema declares them."""
    id_tag = ops.TagAsUserID() if side == "user" else ops.TagAsItemID()
    side_tag = Tags.USER if side == "user" else Tags.ITEM
    output = [entity.id] >> ops.Categorify() >> id_tag
    for name, feature in entity.features.items():
        output = output + _feature_chain(name, feature, side_tag)
    return nvt.Workflow(output, client=client)
