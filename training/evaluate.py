"""Offline evaluation on the held-out split, each metric beside a popularity baseline."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import torch

from datagen import SplitData
from recsys.contract import LABEL, Catalog, History, first_allowed, take_allowed
from recsys.schema import FeatureSchema
from training.data import frame_matrix
from training.metrics import log_loss, recall_at_k, roc_auc
from training.models import DLRM, QueryEncoder
from training.ranking import ranking_inputs
from workflows.fitted import FittedWorkflows, stack_features, transform


def build_index(embeddings: np.ndarray) -> faiss.Index:
    """Exact inner-product search; the catalog sizes served here do not need an ANN index."""
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def evaluate(
    split: SplitData,
    schema: FeatureSchema,
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    catalog: Catalog,
    history: History,
    workflows: FittedWorkflows,
    query_encoder: QueryEncoder,
    item_embeddings: np.ndarray,
    dlrm: DLRM,
    recall_k: int,
) -> dict[str, float | int]:
    user_id, item_id = schema.users.id, schema.items.id
    # Retrieval: users with at least one validation positive, relevant = those items.
    positives = split.valid[split.valid[LABEL] > 0]
    relevant = positives.groupby(user_id)[item_id].apply(lambda s: s.unique())
    users = split.users.set_index(user_id).loc[relevant.index].reset_index()
    user_cat, user_cont = stack_features(transform(workflows.user, users), workflows.user_spec)
    with torch.no_grad():
        queries = query_encoder(torch.from_numpy(user_cat), torch.from_numpy(user_cont)).numpy()
    # As served: what a user consumed in the training window is filtered out, for the model
    # and for the most-popular baseline alike.
    k = min(recall_k, len(catalog.item_ids))
    seen = history.of(relevant.index.to_numpy(np.int64))
    widest = max((len(rows) for rows in seen), default=0)
    _, ranked = build_index(item_embeddings).search(queries, min(k + widest, len(catalog.item_ids)))
    top_rows = take_allowed(ranked, first_allowed(ranked, seen, k), -1)
    train_positives = split.train[split.train[LABEL] > 0][item_id].value_counts()
    popular_rows = pd.Index(catalog.item_ids).get_indexer(train_positives.index.to_numpy())
    popular_rows = popular_rows[popular_rows >= 0][: k + widest]
    popular_ranked = np.tile(popular_rows, (len(seen), 1))
    popular = take_allowed(popular_ranked, first_allowed(popular_ranked, seen, k), -1)
    relevant_sets = list(relevant.to_numpy())
    recall = recall_at_k(_item_ids(catalog, top_rows), relevant_sets)
    recall_popular = recall_at_k(_item_ids(catalog, popular), relevant_sets)

    # Ranking: every validation impression, against the item's smoothed training CTR.
    sparse_names, dense_names = ranking_inputs(workflows.user_spec, workflows.item_spec)
    with torch.no_grad():
        logits = dlrm(
            torch.from_numpy(frame_matrix(valid_frame, sparse_names, np.int64)),
            torch.from_numpy(frame_matrix(valid_frame, dense_names, np.float32)),
        )
    probabilities = torch.sigmoid(logits).numpy()
    labels = valid_frame[LABEL].to_numpy()
    impressions = split.train.groupby(item_id)[LABEL].agg(["sum", "count"])
    prior = float(split.train[LABEL].mean())
    smoothing = 10.0
    ctr = (impressions["sum"] + smoothing * prior) / (impressions["count"] + smoothing)
    baseline = split.valid[item_id].map(ctr).fillna(prior).to_numpy()
    return {
        "recall_k": recall_k,
        "retrieval_recall_at_k": recall,
        "retrieval_recall_at_k_popularity": recall_popular,
        "ranking_auc": roc_auc(labels, probabilities),
        "ranking_auc_popularity": roc_auc(labels, baseline),
        "ranking_logloss": log_loss(labels, probabilities),
        "ranking_logloss_popularity": log_loss(labels, baseline),
        "validation_users": len(relevant_sets),
        "validation_impressions": len(labels),
        "train_impressions": len(train_frame),
    }


def _item_ids(catalog: Catalog, rows: np.ndarray) -> np.ndarray:
    """Raw item ids of catalog rows; unfilled slots become -1 (never relevant)."""
    return np.where(rows >= 0, catalog.item_ids[np.maximum(rows, 0)], -1)
