"""The five serving stages as plain numpy-in/numpy-out operators.

Each stage loads its artefacts from one model version directory and works on a whole
batch at once. The Triton Python models (serving/triton_models/) are thin wrappers that
gather tensors from all requests, call a stage once, and split the result; the in-process
pipeline (recsys/pipeline.py) chains the same stages without a server, which is what the
parity tests and the in-process baseline compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import nvtabular as nvt
import pandas as pd
import torch

from training.train import (
    CATALOG_FILE,
    ITEM_INDEX_FILE,
    QUERY_TOWER_FILE,
    USER_TABLE_FILE,
    Catalog,
)
from workflows.compiled import CompiledWorkflow
from workflows.features import FEATURE_SPEC_FILE, USER_WORKFLOW_DIR, FeatureSpec, stack_features

# The libtorch backend's default file name, so a production image can switch the ranking
# model's config to `pytorch_libtorch` without moving files.
RANKING_MODEL_FILE = "model.pt"

RAW_USER_FEATURES: dict[str, str] = {
    "age": "float32",
    "country": "object",
    "device": "object",
    "zipcode": "object",
}


class UserFeatureStage:
    """Raw user rows (feature-store lookup, optional overrides) -> the user workflow's output.

    The saved workflow is loaded unchanged; its fitted statistics are applied through
    `CompiledWorkflow` (numpy), which tests hold equal to `Workflow.transform`.
    """

    def __init__(self, version_dir: Path) -> None:
        workflow_dir = version_dir / USER_WORKFLOW_DIR
        self.workflow = nvt.Workflow.load(str(workflow_dir))
        self.spec = FeatureSpec.from_json((workflow_dir / FEATURE_SPEC_FILE).read_text())
        self.compiled = CompiledWorkflow.from_workflow(self.workflow, self.spec)
        users = pd.read_parquet(version_dir / USER_TABLE_FILE)
        self.users = users.set_index("user_id")[list(RAW_USER_FEATURES)]
        complete = users.dropna(subset=list(RAW_USER_FEATURES))
        if complete.empty:
            raise ValueError(
                f"{version_dir / USER_TABLE_FILE} has no user without missing features"
            )
        self._sentinel = self.raw_rows(complete["user_id"].to_numpy()[:1])

    def raw_rows(self, user_ids: np.ndarray) -> pd.DataFrame:
        """Stored raw features per user id; unknown users get nulls (served as OOV/null)."""
        rows = self.users.reindex(user_ids.astype(np.int64))
        frame = rows.reset_index()
        frame["age"] = frame["age"].astype(np.float32)
        for name in ("country", "device", "zipcode"):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        return frame

    def transform(self, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The workflow's fitted statistics applied with numpy (the serving hot path)."""
        return self.compiled.transform({name: raw[name].to_numpy() for name in raw.columns})

    def transform_nvtabular(self, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The same transform through `Workflow.transform`: the reference for parity tests."""
        # NVTabular 23.08's Categorify fails on a frame whose column is entirely null (one
        # unknown user); a known row appended and dropped afterwards keeps every column typed.
        padded = pd.concat([raw, self._sentinel], ignore_index=True)
        categorical, continuous = stack_features(self.workflow.transform(padded), self.spec)
        return categorical[:-1], continuous[:-1]


class RetrievalStage:
    """Query tower + exact inner-product search over the item embeddings."""

    def __init__(self, version_dir: Path, num_candidates: int) -> None:
        self.query_tower = torch.jit.load(str(version_dir / QUERY_TOWER_FILE))
        self.index = faiss.read_index(str(version_dir / ITEM_INDEX_FILE))
        if num_candidates > self.index.ntotal:
            raise ValueError(
                f"num_candidates={num_candidates} exceeds the catalog size {self.index.ntotal}"
            )
        self.num_candidates = num_candidates

    def __call__(
        self, user_cat: np.ndarray, user_cont: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            queries = self.query_tower(torch.from_numpy(user_cat), torch.from_numpy(user_cont))
        scores, rows = self.index.search(queries.numpy(), self.num_candidates)
        return rows.astype(np.int64), scores.astype(np.float32)


class ItemFeatureStage:
    """Catalog rows -> transformed item features (precomputed with the item workflow)."""

    def __init__(self, version_dir: Path) -> None:
        self.catalog = Catalog.load(version_dir / CATALOG_FILE)

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.catalog.categorical[rows], self.catalog.continuous[rows]


class RankingStage:
    """DLRM click probability for each (user, candidate) pair."""

    def __init__(self, version_dir: Path) -> None:
        self.scorer = torch.jit.load(str(version_dir / RANKING_MODEL_FILE))

    def __call__(
        self,
        user_cat: np.ndarray,
        user_cont: np.ndarray,
        item_cat: np.ndarray,
        item_cont: np.ndarray,
    ) -> np.ndarray:
        with torch.inference_mode():
            scores = self.scorer(
                torch.from_numpy(user_cat),
                torch.from_numpy(user_cont),
                torch.from_numpy(item_cat),
                torch.from_numpy(item_cont),
            )
        return scores.numpy().astype(np.float32)


@dataclass(frozen=True)
class Recommendation:
    item_ids: np.ndarray  # int64, raw item ids, best first
    scores: np.ndarray  # float32 click probabilities


class ReorderStage:
    """Sort candidates by score, drop excluded items, optionally sample, cut to top_k."""

    def __init__(self, version_dir: Path, max_top_k: int) -> None:
        catalog = Catalog.load(version_dir / CATALOG_FILE)
        self.item_ids = catalog.item_ids
        self.popularity_decile = catalog.popularity_decile
        self._row_of = pd.Index(catalog.item_ids)
        self.max_top_k = max_top_k

    def deciles_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Training-popularity decile of served items (for coverage monitoring)."""
        return self.popularity_decile[self._row_of.get_indexer(item_ids)]

    def __call__(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        top_k: int,
        exclude_item_ids: np.ndarray | None = None,
        temperature: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> Recommendation:
        """One request: `rows` and `scores` are that request's candidates, [C] each."""
        if top_k < 1 or top_k > min(self.max_top_k, len(rows)):
            raise ValueError(
                f"top_k must be between 1 and {min(self.max_top_k, len(rows))} "
                f"(the candidates ranked per request), got {top_k}"
            )
        if not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        item_ids = self.item_ids[rows]
        keep = np.ones(len(rows), dtype=bool)
        if exclude_item_ids is not None and len(exclude_item_ids):
            # Negative values are padding, so one request can carry ragged exclude lists.
            keep = ~np.isin(item_ids, exclude_item_ids[exclude_item_ids >= 0])
        item_ids, scores = item_ids[keep], scores[keep]
        if temperature > 0:
            # Gumbel top-k draws k items without replacement from softmax(logit / T).
            logits = np.log(np.clip(scores, 1e-7, 1 - 1e-7)) - np.log1p(
                -np.clip(scores, 1e-7, 1 - 1e-7)
            )
            generator = rng or np.random.default_rng()
            keys = logits / temperature + generator.gumbel(size=len(logits))
            order = np.argsort(-keys, kind="stable")
        else:
            order = np.argsort(-scores, kind="stable")
        order = order[:top_k]
        return Recommendation(item_ids[order].astype(np.int64), scores[order].astype(np.float32))
