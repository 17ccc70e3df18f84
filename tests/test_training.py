"""Offline quality on the planted-structure data, and the exported artefacts."""

import json

import numpy as np
import pytest
import torch

from recsys.contract import CATALOG_FILE, METRICS_FILE, RANKING_FILE, Catalog
from tests.conftest import TrainedSet
from training.metrics import log_loss, recall_at_k, roc_auc

# Margins over the popularity baseline the default data set must clear. Measured values
# on the default config: recall@50 0.43 vs 0.34, AUC 0.74 vs 0.63.
RECALL_MARGIN = 0.04
AUC_MARGIN = 0.05


def test_metric_helpers_on_known_values() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    assert recall_at_k(np.array([[1, 2], [3, 4]]), [np.array([1, 9]), np.array([4])]) == 0.75


def test_served_lists_beat_popularity_and_als_recall(trained: TrainedSet) -> None:
    m = trained.metrics
    assert m["served_recall_at_k"] > m["popularity_recall_at_k"] + RECALL_MARGIN, m
    assert m["served_recall_at_k"] > m["als_recall_at_k"], m
    assert m["retrieval_recall_at_k"] > m["popularity_recall_at_k"] + RECALL_MARGIN, m


def test_metrics_come_for_every_system_and_present_segment(trained: TrainedSet) -> None:
    m = trained.metrics
    # The planted data's validation users all have training interactions: no cold segment
    # (the real-MovieLens test covers a split with both).
    assert m["validation_users_warm"] == m["validation_users"] > 0
    for system in ("served", "retrieval", "popularity", "als"):
        for metric in ("recall_at_k", "ndcg_at_k"):
            for suffix in ("", "_warm"):
                assert 0.0 <= m[f"{system}_{metric}{suffix}"] <= 1.0, (system, metric, suffix)
            assert f"{system}_{metric}_cold" not in m
        assert 0.0 < m[f"{system}_coverage_at_k"] <= 1.0


def test_dlrm_beats_popularity_auc_and_logloss(trained: TrainedSet) -> None:
    m = trained.metrics
    assert m["ranking_auc"] > m["ranking_auc_popularity"] + AUC_MARGIN, m
    assert m["ranking_logloss"] < m["ranking_logloss_popularity"], m


def test_metrics_json_is_written_next_to_the_models(trained: TrainedSet) -> None:
    written = json.loads((trained.artifacts / "models" / METRICS_FILE).read_text())
    assert written == pytest.approx(trained.metrics)


def test_the_trained_scorer_scores_one_user_against_item_features(trained: TrainedSet) -> None:
    scorer = torch.jit.load(str(trained.artifacts / "models" / RANKING_FILE))
    user_cat = torch.tensor([[3, 4, 3, 10]])
    user_cont = torch.zeros((1, 1))
    item_cat = torch.tensor([[[3, 3, 3], [4, 4, 4]]])
    item_cont = torch.zeros((1, 2, 1))
    scores = scorer(user_cat, user_cont, item_cat, item_cont)
    assert scores.shape == (1, 2)
    assert torch.all((scores > 0) & (scores < 1))


def test_the_served_ranker_looks_up_the_candidates_item_features_in_the_catalog(
    trained: TrainedSet,
) -> None:
    """The repository's model.pt is the trained scorer with the catalog inside: scoring
    catalog rows equals scoring those rows' features with the scorer; -1 slots still score."""
    models = trained.artifacts / "models"
    scorer = torch.jit.load(str(models / RANKING_FILE))
    served = torch.jit.load(str(trained.repository / "ranking" / "1" / "model.pt"))
    catalog = Catalog.load(models / CATALOG_FILE)
    user_cat = torch.tensor([[3, 4, 3, 10]])
    user_cont = torch.zeros((1, 1))
    rows = [0, len(catalog.categorical) - 1]
    scores = served(user_cat, user_cont, torch.tensor([[*rows, -1]]))
    assert scores.shape == (1, 3)
    expected = scorer(
        user_cat,
        user_cont,
        torch.from_numpy(catalog.categorical[rows])[None],
        torch.from_numpy(catalog.continuous[rows])[None],
    )
    torch.testing.assert_close(scores[:, :2], expected)
    assert torch.all((scores > 0) & (scores < 1))
