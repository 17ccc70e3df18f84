"""Model building blocks: multi-hot features are pooled over their tokens, padding ignored."""

from __future__ import annotations

import torch

from training.models import DLRM, CategoricalEmbeddings, RankingScorer


def test_a_multi_hot_feature_is_the_mean_of_its_token_embeddings() -> None:
    layer = CategoricalEmbeddings([10, 20], dim=4, widths=[1, 3])
    inputs = torch.tensor([[5, 7, 9, 0], [6, 0, 0, 0]])  # padding index 0 after the tokens
    out = layer(inputs)
    assert out.shape == (2, 2, 4)
    tokens = layer.tables[1].weight
    torch.testing.assert_close(out[0, 1], (tokens[7] + tokens[9]) / 2)
    torch.testing.assert_close(out[1, 1], torch.zeros(4))  # no tokens: zeros, not NaN
    torch.testing.assert_close(out[0, 0], layer.tables[0].weight[5])


def test_a_dlrm_with_multi_hot_and_no_dense_features_scripts_and_scores() -> None:
    dlrm = DLRM([10, 20, 30], n_dense=0, emb_dim=4, widths=[1, 3, 1]).eval()
    scorer = torch.jit.script(RankingScorer(dlrm))
    user_cat = torch.tensor([[1, 2, 3, 0]])  # user id + a 3-token multi-hot feature
    item_cat = torch.tensor([[[4], [5]]])  # two candidates
    scores = scorer(user_cat, torch.zeros(1, 0), item_cat, torch.zeros(1, 2, 0))
    assert scores.shape == (1, 2) and bool(((scores > 0) & (scores < 1)).all())
