"""Offline evaluation on the held-out split, every number beside the baselines.

Lists are computed as the server computes them: the query tower sees the user's stored
history, what the user consumed in the training window is filtered out (for the model and
for every baseline alike), and the served list is the retrieval candidates re-ordered by
the ranking model. Users are split into warm (they have training interactions) and cold.
"""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import torch

from datagen import SplitData
from recsys.contract import (
    LABEL,
    NO_CANDIDATE,
    Catalog,
    History,
    first_allowed,
    history_matrix,
    order_keys,
    take_allowed,
)
from recsys.schema import FeatureSchema
from recsys.settings import IndexSettings
from training.baselines import als_rows, filtered, most_popular_rows
from training.data import frame_matrix
from training.index import build_index as index_of
from training.metrics import coverage, log_loss, ndcg_at_k, recall_at_k, roc_auc
from training.models import DLRM, QueryEncoder, RankingScorer
from training.ranking import ranking_inputs
from workflows.fitted import FittedWorkflows, stack_features, transform

SEGMENTS = ("all", "warm", "cold")
SYSTEMS = ("served", "retrieval", "popularity", "als")


def build_index(embeddings: np.ndarray, settings: IndexSettings | None = None) -> faiss.Index:
    """The item index as configured (exact inner-product search unless `settings` says
    otherwise); training/index.py builds it, measures and checks its recall."""
    return index_of(embeddings, settings or IndexSettings())


def relevant_items(split: SplitData, schema: FeatureSchema) -> pd.Series:
    """Users with at least one validation positive -> those items (the evaluation users)."""
    positives = split.valid[split.valid[LABEL] > 0]
    return positives.groupby(schema.users.id)[schema.items.id].apply(lambda s: s.unique())


def evaluation_queries(
    split: SplitData,
    schema: FeatureSchema,
    history: History,
    workflows: FittedWorkflows,
    query_encoder: QueryEncoder,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation users' transformed features and query vectors [U, D + 1], in the
    order of `relevant_items`: what the index's recall is measured on at build time."""
    user_id = schema.users.id
    eval_users = relevant_items(split, schema).index.to_numpy(np.int64)
    users = split.users.set_index(user_id).loc[eval_users].reset_index()
    user_cat, user_cont = stack_features(transform(workflows.user, users), workflows.user_spec)
    user_history = history_matrix(history, eval_users, query_encoder.history_length)
    with torch.no_grad():
        queries = query_encoder(
            torch.from_numpy(user_cat), torch.from_numpy(user_cont), torch.from_numpy(user_history)
        ).numpy()
    return user_cat, user_cont, queries


def list_metrics(
    system: str, lists: np.ndarray, relevant: list[np.ndarray], warm: np.ndarray, items: int
) -> dict[str, float]:
    """recall/NDCG of one system's [users, K] lists per segment, and its catalog coverage."""
    out = {f"{system}_coverage_at_k": coverage(lists, items)}
    for segment in SEGMENTS:
        mask = {"all": np.ones_like(warm), "warm": warm, "cold": ~warm}[segment]
        if not mask.any():
            continue
        suffix = "" if segment == "all" else f"_{segment}"
        chosen = [r for r, m in zip(relevant, mask, strict=True) if m]
        out[f"{system}_recall_at_k{suffix}"] = recall_at_k(lists[mask], chosen)
        out[f"{system}_ndcg_at_k{suffix}"] = ndcg_at_k(lists[mask], chosen)
    return out


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
    num_candidates: int,
    retrieval_weight: float,
    index: faiss.Index | None = None,
) -> dict[str, float | int]:
    user_id, item_id = schema.users.id, schema.items.id
    relevant = relevant_items(split, schema)
    eval_users = relevant.index.to_numpy(np.int64)
    relevant_rows = [pd.Index(catalog.item_ids).get_indexer(ids) for ids in relevant]
    warm = np.isin(eval_users, split.train[user_id].to_numpy(np.int64))
    user_cat, user_cont, queries = evaluation_queries(
        split, schema, history, workflows, query_encoder
    )
    n_items = len(catalog.item_ids)
    k = min(recall_k, n_items)
    candidates = max(k, min(num_candidates, n_items))
    seen = history.of(eval_users)
    depth = min(candidates + max((len(rows) for rows in seen), default=0), n_items)
    # The index the server searches (approximate or not), when the caller built one.
    searched = build_index(item_embeddings) if index is None else index
    scores, ranked = searched.search(queries, depth)
    positions = first_allowed(ranked, seen, candidates)
    candidate_rows = take_allowed(ranked, positions, NO_CANDIDATE)
    candidate_scores = take_allowed(scores, positions, np.nan)
    lists = {
        "retrieval": candidate_rows[:, :k],
        "served": served_order(
            candidate_rows,
            candidate_scores,
            retrieval_weight,
            user_cat,
            user_cont,
            catalog,
            dlrm,
            k,
        )[0],  # fmt: skip
        "popularity": filtered(most_popular_rows(split.train, item_id, catalog)[:depth], seen, k),
        "als": filtered(
            als_rows(split.train, user_id, item_id, catalog, eval_users, depth), seen, k
        ),
    }
    metrics: dict[str, float | int] = {"recall_k": recall_k}
    for system in SYSTEMS:
        metrics |= list_metrics(system, lists[system], relevant_rows, warm, n_items)
    metrics |= ranking_metrics(split, schema, valid_frame, workflows, dlrm)
    return metrics | {
        "validation_users": len(eval_users),
        "validation_users_warm": int(warm.sum()),
        "validation_impressions": len(valid_frame),
        "train_impressions": len(train_frame),
    }


def served_order(
    candidate_rows: np.ndarray,
    candidate_scores: np.ndarray,
    retrieval_weight: float,
    user_cat: np.ndarray,
    user_cont: np.ndarray,
    catalog: Catalog,
    dlrm: DLRM,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's candidates in the reorder stage's order at temperature 0, cut to k:
    (catalog rows, the ranking's P(like)); NO_CANDIDATE slots stay last."""
    rows = np.maximum(candidate_rows, 0)
    with torch.no_grad():
        scores = RankingScorer(dlrm)(
            torch.from_numpy(user_cat), torch.from_numpy(user_cont),
            torch.from_numpy(catalog.categorical[rows]), torch.from_numpy(catalog.continuous[rows]),
        ).numpy()  # fmt: skip
    keys = order_keys(scores, np.nan_to_num(candidate_scores), retrieval_weight)
    keys = np.where(candidate_rows >= 0, keys, -np.inf)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :k]
    return (
        np.take_along_axis(candidate_rows, order, axis=1),
        np.take_along_axis(scores, order, axis=1),
    )


def ranking_metrics(
    split: SplitData,
    schema: FeatureSchema,
    valid_frame: pd.DataFrame,
    workflows: FittedWorkflows,
    dlrm: DLRM,
) -> dict[str, float]:
    """Every validation impression, against the item's smoothed training CTR, per segment."""
    user_id, item_id = schema.users.id, schema.items.id
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
    warm = split.valid[user_id].isin(split.train[user_id]).to_numpy()
    out: dict[str, float] = {}
    for segment, mask in (("", np.ones_like(warm)), ("_warm", warm), ("_cold", ~warm)):
        if len(np.unique(labels[mask])) < 2:
            continue  # AUC needs both labels in the segment
        out[f"ranking_auc{segment}"] = roc_auc(labels[mask], probabilities[mask])
        out[f"ranking_auc_popularity{segment}"] = roc_auc(labels[mask], baseline[mask])
        out[f"ranking_logloss{segment}"] = log_loss(labels[mask], probabilities[mask])
        out[f"ranking_logloss_popularity{segment}"] = log_loss(labels[mask], baseline[mask])
    return out
