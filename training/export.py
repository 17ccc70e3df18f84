"""Train both models from the workflows' output, evaluate them and export for serving.

Outputs in the artefact directory: TorchScript query tower and ranker, item embeddings
with a faiss index, the transformed catalog, the user feature table, the reference
profile and metrics.json (each metric beside a popularity baseline).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch

from datagen import SplitData
from monitoring.profile import build_reference_profile
from recsys.contract import (
    CATALOG_FILE,
    HISTORY_FILE,
    ITEM_EMBEDDINGS_FILE,
    ITEM_INDEX_FILE,
    METRICS_FILE,
    PROFILE_FILE,
    QUERY_TOWER_FILE,
    RANKING_FILE,
    USER_TABLE_FILE,
    Catalog,
    History,
    history_matrix,
)
from recsys.schema import FeatureSchema
from recsys.settings import IndexSettings, TrainingSettings
from training.data import (
    build_catalog,
    build_history,
    feature_frame,
    history_before,
    recent_popularity,
    user_matrices,
)
from training.evaluate import evaluate, evaluation_queries, served_order
from training.index import build_checked_index
from training.models import DLRM, QueryEncoder, RankingScorer, item_vectors
from training.quantize import compare_int8
from training.ranking import train_dlrm
from training.retrieval import train_two_tower
from workflows.fitted import FittedWorkflows


def served_scores_sample(
    users: pd.DataFrame,
    user_ids: np.ndarray,
    history: History,
    workflows: FittedWorkflows,
    query_encoder: QueryEncoder,
    index: faiss.Index,
    catalog: Catalog,
    dlrm: DLRM,
    num_candidates: int,
    top_k: int,
    retrieval_weight: float,
) -> np.ndarray:
    """The scores the served pipeline would return to these users (top_k of the ranked
    candidates, in the served order): the reference distribution for score drift."""
    user_cat, user_cont = user_matrices(users, workflows)
    user_history = history_matrix(history, user_ids, query_encoder.history_length)
    with torch.no_grad():
        queries = query_encoder(
            torch.from_numpy(user_cat), torch.from_numpy(user_cont), torch.from_numpy(user_history)
        ).numpy()
    retrieval_scores, found = index.search(queries, min(num_candidates, index.ntotal))
    # An approximate index may find fewer than asked (-1): those slots are not served.
    rows, scores = served_order(found, retrieval_scores, retrieval_weight, user_cat, user_cont,
                                catalog, dlrm, top_k)  # fmt: skip
    return scores[rows >= 0]


def one_request(
    split: SplitData, workflows: FittedWorkflows, catalog: Catalog, num_candidates: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the ranking stage gets for one request: the first user's features and the
    first `num_candidates` catalog rows (the timing input of the INT8 comparison)."""
    user_cat, user_cont = user_matrices(split.users.iloc[:1], workflows)
    count = min(num_candidates, len(catalog.item_ids))
    return (user_cat, user_cont, catalog.categorical[None, :count],
            catalog.continuous[None, :count])  # fmt: skip


def train_and_export(
    split: SplitData,
    schema: FeatureSchema,
    workflows: FittedWorkflows,
    settings: TrainingSettings,
    out_dir: Path,
    num_candidates: int = 100,
    top_k: int = 10,
    history_length: int = 200,
    retrieval_weight: float = 1.0,
    index_settings: IndexSettings | None = None,
) -> dict[str, float | int]:
    """Train both models, write every serving artefact into `out_dir`, return the metrics.

    The item index is built as `index_settings` (serving.index) says and the evaluation
    searches that same index; an approximate index below its recall floor stops the build
    before anything is written."""
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    user_spec, item_spec = workflows.user_spec, workflows.item_spec
    catalog = build_catalog(split, schema, workflows)
    history = build_history(split.train, schema, catalog, history_length)
    train_frame = feature_frame(split.train, split.users, catalog, schema, workflows)
    valid_frame = feature_frame(split.valid, split.users, catalog, schema, workflows)
    train_history = history_before(split.train, schema, catalog, settings.history_length)

    two_tower = train_two_tower(
        train_frame, train_history, user_spec, item_spec, len(catalog.item_ids), settings
    )
    dlrm = train_dlrm(train_frame, user_spec, item_spec, settings)

    query_encoder = QueryEncoder(
        two_tower.query_tower, settings.temperature, settings.popularity_prior_weight,
        settings.history_length,
    ).eval()  # fmt: skip
    log_trend = recent_popularity(split.train, schema, catalog, settings.popularity_half_life)
    item_embeddings = item_vectors(
        two_tower.item_tower, torch.from_numpy(catalog.categorical),
        torch.from_numpy(catalog.continuous), torch.from_numpy(log_trend),
    ).numpy().astype(np.float32)  # fmt: skip
    _, _, queries = evaluation_queries(split, schema, history, workflows, query_encoder)
    index, index_report = build_checked_index(
        item_embeddings, queries, num_candidates, index_settings or IndexSettings()
    )
    metrics = evaluate(split, schema, train_frame, valid_frame, catalog, history, workflows,
                       query_encoder, item_embeddings, dlrm, settings.recall_k,
                       num_candidates, retrieval_weight, index)  # fmt: skip
    metrics |= index_report.metrics()
    ranking_scorer = RankingScorer(dlrm).eval()
    if settings.quantize_ranking:
        int8_scorer, report = compare_int8(
            dlrm, valid_frame, user_spec, item_spec,
            one_request(split, workflows, catalog, num_candidates),
            settings.quantize_auc_tolerance,
        )  # fmt: skip
        metrics |= report.metrics()
        if report.accepted:
            ranking_scorer = int8_scorer

    torch.jit.script(query_encoder).save(str(out_dir / QUERY_TOWER_FILE))
    torch.jit.script(ranking_scorer).save(str(out_dir / RANKING_FILE))
    np.save(out_dir / ITEM_EMBEDDINGS_FILE, item_embeddings)
    faiss.write_index(index, str(out_dir / ITEM_INDEX_FILE))
    # Reference profile: requests as training traffic looked (one row per training
    # interaction's user) and the scores served to a sample of those users.
    user_id = schema.users.id
    requests = split.train[[user_id]].merge(split.users, on=user_id, how="left")
    sample = requests.sample(n=min(2000, len(requests)), random_state=settings.seed)
    sample = sample.drop_duplicates(user_id)
    scores = served_scores_sample(
        sample, sample[user_id].to_numpy(np.int64), history, workflows, query_encoder, index,
        catalog, dlrm, num_candidates, top_k, retrieval_weight,
    )  # fmt: skip
    build_reference_profile(schema, requests, scores).save(out_dir / PROFILE_FILE)
    catalog.save(out_dir / CATALOG_FILE)
    history.save(out_dir / HISTORY_FILE)
    split.users.to_parquet(out_dir / USER_TABLE_FILE, index=False)
    (out_dir / METRICS_FILE).write_text(json.dumps(_finite(metrics), indent=2))
    return metrics


def _finite(metrics: dict[str, float | int]) -> dict[str, float | int]:
    bad = [n for n, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"training produced non-finite metrics: {bad}")
    return metrics
