"""Two-tower retrieval training: in-batch sampled softmax over clicked (user, item) pairs,
the query tower seeing each user's interactions before the click."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recsys.contract import LABEL, FeatureSpec
from recsys.settings import TrainingSettings
from training.data import loader, slot_names, stack
from training.models import TwoTower
from training.progress import epoch_progress

ROW = "__row__"


def train_two_tower(
    train: pd.DataFrame,
    history: np.ndarray,
    user_spec: FeatureSpec,
    item_spec: FeatureSpec,
    num_items: int,
    settings: TrainingSettings,
) -> TwoTower:
    """`train`: transformed interactions (training.data.feature_frame); `history`: their
    users' earlier items [N, history_length] (training.data.history_before)."""
    clicked = (train[LABEL] > 0).to_numpy()
    positives = train[clicked].reset_index(drop=True)
    # The dataloader carries one row number per positive, not `history_length` columns
    # (converting each column per batch is what dominates its time); the batch's history
    # is gathered from one tensor by that number.
    positives[ROW] = np.arange(len(positives), dtype=np.int64)
    histories = torch.from_numpy(np.ascontiguousarray(history[clicked]))
    # The item id is the item workflow's first column (see workflows/build.py).
    item_slot = slot_names(item_spec)[0]
    item_counts = positives[item_slot].map(positives[item_slot].value_counts())
    positives["item_logq"] = np.log(item_counts / len(positives)).astype(np.float32)
    model = TwoTower(
        list(user_spec.cardinalities),
        len(user_spec.continuous),
        list(item_spec.cardinalities),
        len(item_spec.continuous),
        num_items,
        settings.embedding_dim,
        settings.tower_dim,
        temperature=settings.temperature,
        user_widths=list(user_spec.widths),
        item_widths=list(item_spec.widths),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    batches = loader(positives, settings.batch_size, shuffle=True)
    user_slots, item_slots = slot_names(user_spec), slot_names(item_spec)
    model.train()
    for epoch in range(settings.retrieval_epochs):
        with epoch_progress("two-tower", epoch, settings.retrieval_epochs) as progress:
            for batch, _ in batches:
                loss = model.in_batch_loss(
                    stack(batch, user_slots, torch.int64),
                    stack(batch, user_spec.continuous, torch.float32),
                    histories[batch[ROW].reshape(-1)],
                    stack(batch, item_slots, torch.int64),
                    stack(batch, item_spec.continuous, torch.float32),
                    batch["item_logq"].reshape(-1),
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                progress.step(loss.item())
    return model.eval()
