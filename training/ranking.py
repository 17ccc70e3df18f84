"""DLRM ranking training: binary cross-entropy on every impression."""

from __future__ import annotations

import pandas as pd
import torch

from recsys.contract import FeatureSpec
from recsys.settings import TrainingSettings
from training.data import loader, slot_names, stack
from training.models import DLRM
from training.progress import epoch_progress


def ranking_inputs(user_spec: FeatureSpec, item_spec: FeatureSpec) -> tuple[tuple[str, ...], ...]:
    """(sparse slot columns, dense columns) of the DLRM, user side first."""
    sparse = slot_names(user_spec) + slot_names(item_spec)
    return sparse, user_spec.continuous + item_spec.continuous


def build_dlrm(user_spec: FeatureSpec, item_spec: FeatureSpec, emb_dim: int) -> DLRM:
    return DLRM(
        list(user_spec.cardinalities + item_spec.cardinalities),
        len(user_spec.continuous) + len(item_spec.continuous),
        emb_dim,
        widths=list(user_spec.widths + item_spec.widths),
    )


def train_dlrm(
    train: pd.DataFrame, user_spec: FeatureSpec, item_spec: FeatureSpec, settings: TrainingSettings
) -> DLRM:
    sparse_names, dense_names = ranking_inputs(user_spec, item_spec)
    model = build_dlrm(user_spec, item_spec, settings.embedding_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    batches = loader(train, settings.batch_size, shuffle=True)
    model.train()
    for epoch in range(settings.ranking_epochs):
        with epoch_progress("DLRM", epoch, settings.ranking_epochs) as progress:
            for batch, labels in batches:
                logits = model(
                    stack(batch, sparse_names, torch.int64),
                    stack(batch, dense_names, torch.float32),
                )
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, labels.reshape(-1)
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                progress.step(loss.item())
    return model.eval()
