"""Two-tower retrieval training: in-batch sampled softmax over clicked (user, item) pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from recsys.contract import LABEL, FeatureSpec
from recsys.settings import TrainingSettings
from training.data import loader, slot_names, stack
from training.models import TwoTower


def train_two_tower(
    train: pd.DataFrame, user_spec: FeatureSpec, item_spec: FeatureSpec, settings: TrainingSettings
) -> TwoTower:
    positives = train[train[LABEL] > 0].reset_index(drop=True)
    # The item id is the item workflow's first column (see workflows/build.py).
    item_slot = slot_names(item_spec)[0]
    item_counts = positives[item_slot].map(positives[item_slot].value_counts())
    positives["item_logq"] = np.log(item_counts / len(positives)).astype(np.float32)
    model = TwoTower(
        list(user_spec.cardinalities),
        len(user_spec.continuous),
        list(item_spec.cardinalities),
        len(item_spec.continuous),
        settings.embedding_dim,
        settings.tower_dim,
        user_widths=list(user_spec.widths),
        item_widths=list(item_spec.widths),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    batches = loader(positives, settings.batch_size, shuffle=True)
    user_slots, item_slots = slot_names(user_spec), slot_names(item_spec)
    model.train()
    for epoch in range(settings.retrieval_epochs):
        progress = tqdm(batches, desc=f"two-tower epoch {epoch + 1}/{settings.retrieval_epochs}",
                        leave=False, mininterval=2.0)  # fmt: skip
        for batch, _ in progress:
            loss = model.in_batch_loss(
                stack(batch, user_slots, torch.int64),
                stack(batch, user_spec.continuous, torch.float32),
                stack(batch, item_slots, torch.int64),
                stack(batch, item_spec.continuous, torch.float32),
                batch["item_logq"].reshape(-1),
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()
