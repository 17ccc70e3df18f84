"""The same stages the server runs, chained in-process from a model repository version.

Used by the parity tests (served answers must equal these) and by the perf baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.settings import ServingSettings
from serving.overrides import parse_override
from serving.stages.ranking import RankingStage
from serving.stages.reorder import Recommendation, ReorderStage
from serving.stages.retrieval import RetrievalStage
from serving.stages.user_features import UserFeatureStage


@dataclass
class InProcessRecommender:
    repository: Path
    version: int
    serving: ServingSettings
    user_features: UserFeatureStage = field(init=False)
    retrieval: RetrievalStage = field(init=False)
    ranking: RankingStage = field(init=False)
    reorder: ReorderStage = field(init=False)

    def __post_init__(self) -> None:
        def version_dir(model: str) -> Path:
            return self.repository / model / str(self.version)

        self.user_features = UserFeatureStage(version_dir("user_features"))
        self.retrieval = RetrievalStage(version_dir("retrieval"), self.serving.num_candidates)
        self.ranking = RankingStage(version_dir("ranking"))
        self.reorder = ReorderStage(
            version_dir("reorder"), self.serving.max_top_k, self.serving.retrieval_weight
        )

    def recommend(
        self,
        user_ids: np.ndarray,
        top_k: int,
        exclude_item_ids: list[np.ndarray] | None = None,
        overrides: dict[str, np.ndarray] | None = None,
        filter_seen: bool = True,
        history_item_ids: list[np.ndarray] | None = None,
    ) -> list[Recommendation]:
        """What the ensemble answers; `filter_seen` and `history_item_ids` as the request
        inputs of those names."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        raw = self.user_features.raw_columns(user_ids)
        features = self.user_features.features
        for name, values in (overrides or {}).items():
            raw[name] = parse_override(name, features[name], np.asarray(values))
        user_cat, user_cont = self.user_features.transform(raw)
        exclude = None
        if exclude_item_ids is not None:
            exclude = [np.asarray(ids, dtype=np.int64) for ids in exclude_item_ids]
        seen = np.full(len(user_ids), filter_seen, dtype=bool)
        session = None
        if history_item_ids is not None:
            session = [np.asarray(ids, dtype=np.int64) for ids in history_item_ids]
        rows, retrieval_scores = self.retrieval(user_cat, user_cont, user_ids, exclude, seen,
                                                session)  # fmt: skip
        scores = self.ranking(user_cat, user_cont, rows)
        return [
            self.reorder(
                rows[i],
                scores[i],
                top_k,
                None if exclude is None else exclude[i],
                retrieval_scores=retrieval_scores[i],
            )  # fmt: skip
            for i in range(len(rows))
        ]
