"""Training frames: one transformed row per interaction, and Merlin dataloaders over them.

Multi-hot features are expanded into one column per token slot (`<name>__<slot>`), so the
dataloader sees only scalar columns; `stack` puts them back side by side in spec order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from merlin.dataloader.torch import Loader
from merlin.io import Dataset
from merlin.schema import Tags

from datagen import SplitData
from recsys.contract import LABEL, TIMESTAMP, Catalog, FeatureSpec, History
from recsys.schema import FeatureSchema
from workflows.fitted import FittedWorkflows, stack_features, transform


def slot_names(spec: FeatureSpec) -> tuple[str, ...]:
    """One column name per slot of the categorical tensor, in order."""
    return tuple(
        name if width == 1 else f"{name}__{slot}"
        for name, width in zip(spec.categorical, spec.widths, strict=True)
        for slot in range(width)
    )


def popularity_deciles(item_ids: np.ndarray, train: pd.DataFrame, item_col: str) -> np.ndarray:
    counts = train[item_col].value_counts().reindex(item_ids, fill_value=0).to_numpy()
    rank = np.argsort(np.argsort(-counts, kind="stable"), kind="stable")
    return (rank * 10 // len(item_ids)).astype(np.int8)


def build_catalog(split: SplitData, schema: FeatureSchema, workflows: FittedWorkflows) -> Catalog:
    """Every item's transformed features, computed once with the fitted item workflow."""
    items = split.items
    categorical, continuous = stack_features(transform(workflows.item, items), workflows.item_spec)
    item_ids = items[schema.items.id].to_numpy(np.int64)
    deciles = popularity_deciles(item_ids, split.train, schema.items.id)
    return Catalog(item_ids, categorical, continuous, deciles)


def build_history(
    train: pd.DataFrame, schema: FeatureSchema, catalog: Catalog, length: int
) -> History:
    """Each user's latest `length` training interactions as catalog rows, in time order."""
    user_id, item_id = schema.users.id, schema.items.id
    ordered = train.sort_values([user_id, TIMESTAMP], kind="stable")
    latest = ordered.groupby(user_id, sort=False).tail(length) if length else ordered.iloc[:0]
    rows = pd.Index(catalog.item_ids).get_indexer(latest[item_id].to_numpy())
    user_ids, counts = np.unique(latest[user_id].to_numpy(np.int64), return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return History(user_ids, offsets, rows.astype(np.int64))


def history_before(
    interactions: pd.DataFrame, schema: FeatureSchema, catalog: Catalog, length: int
) -> np.ndarray:
    """[N, length] int64, aligned with `interactions`' rows: each interaction's user's
    latest `length` earlier interactions as catalog row + 1 (0 pads on the left).

    Only strictly earlier timestamps count, so an interaction never sees itself or what
    the user did in the same second: training sees what serving will see.
    """
    user_id, item_id = schema.users.id, schema.items.id
    order = np.lexsort((interactions[TIMESTAMP].to_numpy(), interactions[user_id].to_numpy()))
    users = interactions[user_id].to_numpy()[order]
    times = interactions[TIMESTAMP].to_numpy()[order]
    rows = pd.Index(catalog.item_ids).get_indexer(interactions[item_id].to_numpy()[order])
    position = np.arange(len(order))
    new_user = np.r_[True, users[1:] != users[:-1]]
    new_moment = new_user | np.r_[True, times[1:] != times[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, position, 0))
    moment_start = np.maximum.accumulate(np.where(new_moment, position, 0))
    # Slot j of row p holds position moment_start[p] - length + j when that is still the
    # same user's, i.e. the `length` interactions before this moment, oldest first.
    source = moment_start[:, None] - length + np.arange(length)[None, :]
    valid = source >= user_start[:, None]
    sorted_history = np.where(valid, rows[np.maximum(source, 0)] + 1, 0).astype(np.int64)
    history = np.empty_like(sorted_history)
    history[order] = sorted_history
    return history


def recent_popularity(
    train: pd.DataFrame, schema: FeatureSchema, catalog: Catalog, half_life_fraction: float
) -> np.ndarray:
    """[items] float32 log share of recent interactions per catalog row: every training
    interaction counts, decayed with a half-life of `half_life_fraction` of the training
    window (unit-free, whatever the timestamps' unit), plus one decayed count of smoothing
    so unseen items get a finite, low prior."""
    times = train[TIMESTAMP].to_numpy(np.float64)
    span = max(float(times.max() - times.min()), 1.0)
    weights = np.exp2(-(times.max() - times) / (half_life_fraction * span))
    rows = pd.Index(catalog.item_ids).get_indexer(train[schema.items.id].to_numpy())
    counts = np.bincount(rows[rows >= 0], weights[rows >= 0], minlength=len(catalog.item_ids))
    counts = counts + weights.min()
    return np.log(counts / counts.sum()).astype(np.float32)


def user_matrices(users: pd.DataFrame, workflows: FittedWorkflows) -> tuple[np.ndarray, np.ndarray]:
    return stack_features(transform(workflows.user, users), workflows.user_spec)


def feature_frame(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    catalog: Catalog,
    schema: FeatureSchema,
    workflows: FittedWorkflows,
) -> pd.DataFrame:
    """One transformed row per interaction: user slots, item slots, continuous, label."""
    user_spec, item_spec = workflows.user_spec, workflows.item_spec
    user_cat, user_cont = user_matrices(users, workflows)
    user_rows = pd.Index(users[schema.users.id].to_numpy()).get_indexer(
        interactions[schema.users.id].to_numpy()
    )
    item_rows = pd.Index(catalog.item_ids).get_indexer(interactions[schema.items.id].to_numpy())
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(slot_names(user_spec)):
        columns[name] = user_cat[user_rows, i]
    for i, name in enumerate(user_spec.continuous):
        columns[name] = user_cont[user_rows, i]
    for i, name in enumerate(slot_names(item_spec)):
        columns[name] = catalog.categorical[item_rows, i]
    for i, name in enumerate(item_spec.continuous):
        columns[name] = catalog.continuous[item_rows, i]
    columns[LABEL] = interactions[LABEL].to_numpy(np.float32)
    return pd.DataFrame(columns)


def loader(frame: pd.DataFrame, batch_size: int, shuffle: bool) -> Loader:
    dataset = Dataset(frame, cpu=True)
    schema = dataset.schema
    schema[LABEL] = schema[LABEL].with_tags([Tags.TARGET, Tags.BINARY_CLASSIFICATION])
    dataset.schema = schema
    return Loader(dataset, batch_size=batch_size, shuffle=shuffle)


def stack(
    batch: dict[str, torch.Tensor], names: tuple[str, ...], dtype: torch.dtype
) -> torch.Tensor:
    """Batch columns side by side: [B, len(names)] (an empty [B, 0] for no names)."""
    if not names:
        first = next(iter(batch.values()))
        return torch.zeros((len(first), 0), dtype=dtype)
    return torch.stack([batch[name].reshape(-1).to(dtype) for name in names], dim=1)


def frame_matrix(frame: pd.DataFrame, names: tuple[str, ...], dtype: type) -> np.ndarray:
    if not names:
        return np.zeros((len(frame), 0), dtype=dtype)
    return frame[list(names)].to_numpy(dtype=dtype)
