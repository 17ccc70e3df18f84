"""Train both models from the workflows' output, evaluate them and export for serving.

Batches come from Merlin's dataloader over the NVTabular-transformed frames. Outputs in
the artefact directory: TorchScript query tower and ranker, item embeddings with a faiss
index, the transformed catalog, and metrics.json (each metric beside a popularity
baseline).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from merlin.dataloader.torch import Loader
from merlin.io import Dataset
from merlin.schema import Tags
from tqdm import tqdm

from monitoring.profile import PROFILE_FILE, build_reference_profile
from recsys.datagen import SplitData
from recsys.settings import TrainingSettings
from training.metrics import log_loss, recall_at_k, roc_auc
from training.models import DLRM, QueryEncoder, RankingScorer, TwoTower
from workflows.features import FeatureSpec, FittedWorkflows, stack_features, transform

QUERY_TOWER_FILE = "query_tower.pt"
RANKING_FILE = "ranking.pt"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_INDEX_FILE = "item_index.faiss"
CATALOG_FILE = "catalog.npz"
USER_TABLE_FILE = "users.parquet"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Catalog:
    """The item catalog as served: raw ids and transformed features, one row per item."""

    item_ids: np.ndarray  # int64 [N]
    categorical: np.ndarray  # int64 [N, n_cat]
    continuous: np.ndarray  # float32 [N, n_cont]
    # Training-popularity decile per item (0 = most impressed), for coverage monitoring.
    popularity_decile: np.ndarray  # int8 [N]

    def save(self, path: Path) -> None:
        np.savez(path, item_ids=self.item_ids, categorical=self.categorical,
                 continuous=self.continuous, popularity_decile=self.popularity_decile)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Catalog:
        with np.load(path) as arrays:
            item_ids = arrays["item_ids"]
            # Catalogs written before popularity tracking: decile -1 ("unknown").
            deciles = (arrays["popularity_decile"] if "popularity_decile" in arrays
                       else np.full(len(item_ids), -1, dtype=np.int8))  # fmt: skip
            return cls(item_ids, arrays["categorical"], arrays["continuous"], deciles)


def popularity_deciles(item_ids: np.ndarray, train: pd.DataFrame) -> np.ndarray:
    counts = train["item_id"].value_counts().reindex(item_ids, fill_value=0).to_numpy()
    rank = np.argsort(np.argsort(-counts, kind="stable"), kind="stable")
    return (rank * 10 // len(item_ids)).astype(np.int8)


def build_catalog(items: pd.DataFrame, workflows: FittedWorkflows, train: pd.DataFrame) -> Catalog:
    categorical, continuous = stack_features(transform(workflows.item, items), workflows.item_spec)
    item_ids = items["item_id"].to_numpy(np.int64)
    return Catalog(item_ids, categorical, continuous, popularity_deciles(item_ids, train))


def feature_frame(
    interactions: pd.DataFrame, users: pd.DataFrame, catalog: Catalog, workflows: FittedWorkflows
) -> pd.DataFrame:
    """One transformed row per interaction: user and item features, click."""
    user_spec, item_spec = workflows.user_spec, workflows.item_spec
    user_features = transform(workflows.user, users)
    user_features.index = users["user_id"].to_numpy()
    frame = user_features.loc[interactions["user_id"].to_numpy()].reset_index(drop=True)
    frame[list(user_spec.categorical)] = frame[list(user_spec.categorical)].astype(np.int64)
    frame[list(user_spec.continuous)] = frame[list(user_spec.continuous)].astype(np.float32)
    rows = pd.Index(catalog.item_ids).get_indexer(interactions["item_id"].to_numpy())
    for i, name in enumerate(item_spec.categorical):
        frame[name] = catalog.categorical[rows, i]
    for i, name in enumerate(item_spec.continuous):
        frame[name] = catalog.continuous[rows, i]
    frame["click"] = interactions["click"].to_numpy(np.float32)
    return frame


def _loader(frame: pd.DataFrame, batch_size: int, shuffle: bool) -> Loader:
    dataset = Dataset(frame, cpu=True)
    schema = dataset.schema
    schema["click"] = schema["click"].with_tags([Tags.TARGET, Tags.BINARY_CLASSIFICATION])
    dataset.schema = schema
    return Loader(dataset, batch_size=batch_size, shuffle=shuffle)


def _stack(
    batch: dict[str, torch.Tensor], names: tuple[str, ...], dtype: torch.dtype
) -> torch.Tensor:
    if not names:
        first = next(iter(batch.values()))
        return torch.zeros((len(first), 0), dtype=dtype)
    return torch.stack([batch[name].reshape(-1).to(dtype) for name in names], dim=1)


def train_two_tower(
    train: pd.DataFrame, user_spec: FeatureSpec, item_spec: FeatureSpec, settings: TrainingSettings
) -> TwoTower:
    positives = train[train["click"] > 0].reset_index(drop=True)
    item_counts = positives["item_id"].map(positives["item_id"].value_counts())
    positives["item_logq"] = np.log(item_counts / len(positives)).astype(np.float32)
    model = TwoTower(
        list(user_spec.cardinalities),
        len(user_spec.continuous),
        list(item_spec.cardinalities),
        len(item_spec.continuous),
        settings.embedding_dim,
        settings.tower_dim,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loader = _loader(positives, settings.batch_size, shuffle=True)
    model.train()
    for epoch in range(settings.retrieval_epochs):
        progress = tqdm(
            loader,
            desc=f"two-tower epoch {epoch + 1}/{settings.retrieval_epochs}",
            leave=False,
            mininterval=2.0,
        )
        for batch, _ in progress:
            loss = model.in_batch_loss(
                _stack(batch, user_spec.categorical, torch.int64),
                _stack(batch, user_spec.continuous, torch.float32),
                _stack(batch, item_spec.categorical, torch.int64),
                _stack(batch, item_spec.continuous, torch.float32),
                batch["item_logq"].reshape(-1),
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def train_dlrm(
    train: pd.DataFrame, user_spec: FeatureSpec, item_spec: FeatureSpec, settings: TrainingSettings
) -> DLRM:
    sparse_names = user_spec.categorical + item_spec.categorical
    dense_names = user_spec.continuous + item_spec.continuous
    model = DLRM(
        list(user_spec.cardinalities + item_spec.cardinalities),
        len(dense_names),
        settings.embedding_dim,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loader = _loader(train, settings.batch_size, shuffle=True)
    model.train()
    for epoch in range(settings.ranking_epochs):
        progress = tqdm(
            loader,
            desc=f"DLRM epoch {epoch + 1}/{settings.ranking_epochs}",
            leave=False,
            mininterval=2.0,
        )
        for batch, labels in progress:
            logits = model(
                _stack(batch, sparse_names, torch.int64), _stack(batch, dense_names, torch.float32)
            )
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def build_index(embeddings: np.ndarray) -> faiss.Index:
    """Exact inner-product search; the catalog sizes served here do not need an ANN index."""
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def evaluate(
    split: SplitData,
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    catalog: Catalog,
    workflows: FittedWorkflows,
    query_encoder: QueryEncoder,
    item_embeddings: np.ndarray,
    scorer_dlrm: DLRM,
    recall_k: int,
) -> dict[str, float | int]:
    user_spec, item_spec = workflows.user_spec, workflows.item_spec
    # Retrieval: users with at least one validation click, relevant = their clicked items.
    clicks = split.valid[split.valid["click"] > 0]
    relevant = clicks.groupby("user_id")["item_id"].apply(lambda s: s.unique())
    users = split.users.set_index("user_id").loc[relevant.index].reset_index()
    user_cat, user_cont = stack_features(transform(workflows.user, users), user_spec)
    with torch.no_grad():
        queries = query_encoder(torch.from_numpy(user_cat), torch.from_numpy(user_cont)).numpy()
    _, top_rows = build_index(item_embeddings).search(queries, recall_k)
    retrieved = catalog.item_ids[top_rows]
    train_clicks = split.train[split.train["click"] > 0]["item_id"].value_counts()
    popular = train_clicks.index.to_numpy()[:recall_k]
    relevant_sets = list(relevant.to_numpy())
    recall = recall_at_k(retrieved, relevant_sets)
    recall_popular = recall_at_k(np.tile(popular, (len(relevant_sets), 1)), relevant_sets)

    # Ranking: every validation impression, against the item's smoothed training CTR.
    sparse_names = user_spec.categorical + item_spec.categorical
    dense_names = user_spec.continuous + item_spec.continuous
    with torch.no_grad():
        logits = scorer_dlrm(
            torch.from_numpy(valid_frame[list(sparse_names)].to_numpy(np.int64)),
            torch.from_numpy(valid_frame[list(dense_names)].to_numpy(np.float32)),
        )
    probabilities = torch.sigmoid(logits).numpy()
    labels = valid_frame["click"].to_numpy()
    impressions = split.train.groupby("item_id")["click"].agg(["sum", "count"])
    prior = float(split.train["click"].mean())
    smoothing = 10.0
    ctr = (impressions["sum"] + smoothing * prior) / (impressions["count"] + smoothing)
    baseline = split.valid["item_id"].map(ctr).fillna(prior).to_numpy()
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


def served_scores_sample(
    users: pd.DataFrame,
    workflows: FittedWorkflows,
    query_encoder: QueryEncoder,
    index: faiss.Index,
    catalog: Catalog,
    dlrm: DLRM,
    num_candidates: int,
    top_k: int,
) -> np.ndarray:
    """The scores the served pipeline would return to these users (top_k of the ranked
    candidates): the reference distribution for score drift."""
    user_cat, user_cont = stack_features(transform(workflows.user, users), workflows.user_spec)
    with torch.no_grad():
        queries = query_encoder(torch.from_numpy(user_cat), torch.from_numpy(user_cont)).numpy()
        _, rows = index.search(queries, min(num_candidates, index.ntotal))
        scores = RankingScorer(dlrm)(
            torch.from_numpy(user_cat), torch.from_numpy(user_cont),
            torch.from_numpy(catalog.categorical[rows]), torch.from_numpy(catalog.continuous[rows]),
        ).numpy()  # fmt: skip
    return -np.sort(-scores, axis=1)[:, :top_k].ravel()


def train_and_export(
    split: SplitData,
    workflows: FittedWorkflows,
    settings: TrainingSettings,
    out_dir: Path,
    num_candidates: int = 100,
    top_k: int = 10,
) -> dict[str, float | int]:
    """Train both models, write every serving artefact into `out_dir`, return the metrics."""
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    user_spec, item_spec = workflows.user_spec, workflows.item_spec
    catalog = build_catalog(split.items, workflows, split.train)
    train_frame = feature_frame(split.train, split.users, catalog, workflows)
    valid_frame = feature_frame(split.valid, split.users, catalog, workflows)

    two_tower = train_two_tower(train_frame, user_spec, item_spec, settings)
    dlrm = train_dlrm(train_frame, user_spec, item_spec, settings)

    query_encoder = QueryEncoder(two_tower.query_tower).eval()
    with torch.no_grad():
        item_embeddings = (
            two_tower.item_tower(
                torch.from_numpy(catalog.categorical), torch.from_numpy(catalog.continuous)
            )
            .numpy()
            .astype(np.float32)
        )
    metrics = evaluate(
        split,
        train_frame,
        valid_frame,
        catalog,
        workflows,
        query_encoder,
        item_embeddings,
        dlrm,
        settings.recall_k,
    )

    torch.jit.script(query_encoder).save(str(out_dir / QUERY_TOWER_FILE))
    torch.jit.script(RankingScorer(dlrm).eval()).save(str(out_dir / RANKING_FILE))
    np.save(out_dir / ITEM_EMBEDDINGS_FILE, item_embeddings)
    index = build_index(item_embeddings)
    faiss.write_index(index, str(out_dir / ITEM_INDEX_FILE))
    # Reference profile: requests as training traffic looked (one row per training
    # interaction's user) and the scores served to a sample of those users.
    requests = split.train[["user_id"]].merge(split.users, on="user_id", how="left")
    sample = requests.sample(n=min(2000, len(requests)), random_state=settings.seed)
    scores = served_scores_sample(sample.drop_duplicates("user_id"), workflows, query_encoder,
                                  index, catalog, dlrm, num_candidates, top_k)  # fmt: skip
    build_reference_profile(requests, scores).save(out_dir / PROFILE_FILE)
    catalog.save(out_dir / CATALOG_FILE)
    split.users.to_parquet(out_dir / USER_TABLE_FILE, index=False)
    (out_dir / METRICS_FILE).write_text(json.dumps(_finite(metrics), indent=2))
    return metrics


def _finite(metrics: dict[str, float | int]) -> dict[str, float | int]:
    bad = [
        name
        for name, value in metrics.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]
    if bad:
        raise ValueError(f"training produced non-finite metrics: {bad}")
    return metrics
