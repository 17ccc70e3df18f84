"""Plain PyTorch modules: a two-tower retriever and a DLRM ranker.

The DLRM follows the paper and TorchRec's module layout (sparse embeddings, bottom MLP
over dense features, pairwise dot interaction, top MLP). merlin-models' DLRMModel trains
on this stack but cannot be scripted for serving, so we keep plain nn.Modules that
`torch.jit.script` accepts; the serving wrappers fix the tensor layout Triton sees.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


def mlp(sizes: list[int], final_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if final_activation or index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class CategoricalEmbeddings(nn.Module):
    """One table per categorical feature: [N, sum(widths)] -> [N, F, D].

    A feature of width 1 is one index; a wider (multi-hot) feature is `width` token indices
    padded with 0, pooled to the mean of its non-padding tokens (zeros if it has none).
    """

    def __init__(self, cardinalities: list[int], dim: int, widths: list[int] | None = None):
        super().__init__()
        widths = widths or [1] * len(cardinalities)
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.05)
        self.widths: list[int] = list(widths)
        self.offsets: list[int] = [sum(widths[:i]) for i in range(len(widths))]

    def forward(self, categorical: torch.Tensor) -> torch.Tensor:
        columns: list[torch.Tensor] = []
        for i, table in enumerate(self.tables):
            start, width = self.offsets[i], self.widths[i]
            if width == 1:
                columns.append(table(categorical[:, start]))
            else:
                tokens = categorical[:, start : start + width]  # [N, W]
                mask = (tokens > 0).to(torch.float32).unsqueeze(2)  # [N, W, 1]
                summed = (table(tokens) * mask).sum(dim=1)  # [N, D]
                columns.append(summed / mask.sum(dim=1).clamp(min=1.0))
        return torch.stack(columns, dim=1)


class Tower(nn.Module):
    """Embeddings + continuous features -> MLP -> L2-normalised vector [N, out_dim]."""

    def __init__(
        self,
        cardinalities: list[int],
        n_continuous: int,
        emb_dim: int,
        out_dim: int,
        widths: list[int] | None = None,
    ):
        super().__init__()
        self.embeddings = CategoricalEmbeddings(cardinalities, emb_dim, widths)
        width = len(cardinalities) * emb_dim + n_continuous
        self.mlp = mlp([width, 2 * out_dim, out_dim], final_activation=False)

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        embedded = self.embeddings(categorical).flatten(1)
        hidden = self.mlp(torch.cat([embedded, continuous], dim=1))
        return nn.functional.normalize(hidden, dim=1)


class HistoryPooling(nn.Module):
    """A user's recent items -> the mean of their embeddings: [N, H] -> [N, D].

    Items are catalog rows + 1, so 0 is padding (zeros for a user with no history). Mean
    pooling is what YouTube's candidate generator does with watch history: order-free,
    cheap, and a user who sends two items in-session is already personalised.
    """

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=0.05)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        mask = (history > 0).to(torch.float32).unsqueeze(2)  # [N, H, 1]
        summed = (self.table(history) * mask).sum(dim=1)  # [N, D]
        return summed / mask.sum(dim=1).clamp(min=1.0)


class QueryTower(nn.Module):
    """User features + pooled interaction history -> MLP -> L2-normalised vector [N, out]."""

    def __init__(
        self,
        cardinalities: list[int],
        n_continuous: int,
        num_items: int,
        emb_dim: int,
        out_dim: int,
        widths: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = CategoricalEmbeddings(cardinalities, emb_dim, widths)
        self.history = HistoryPooling(num_items, out_dim)
        width = len(cardinalities) * emb_dim + n_continuous + out_dim
        self.mlp = mlp([width, 2 * out_dim, out_dim], final_activation=False)

    def forward(
        self, categorical: torch.Tensor, continuous: torch.Tensor, history: torch.Tensor
    ) -> torch.Tensor:
        embedded = self.embeddings(categorical).flatten(1)
        hidden = self.mlp(torch.cat([embedded, continuous, self.history(history)], dim=1))
        return nn.functional.normalize(hidden, dim=1)


class TwoTower(nn.Module):
    """Query and item towers trained with in-batch negatives (sampled softmax)."""

    def __init__(
        self,
        user_cardinalities: list[int],
        n_user_continuous: int,
        item_cardinalities: list[int],
        n_item_continuous: int,
        num_items: int,
        emb_dim: int,
        out_dim: int,
        temperature: float = 0.1,
        user_widths: list[int] | None = None,
        item_widths: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.query_tower = QueryTower(
            user_cardinalities, n_user_continuous, num_items, emb_dim, out_dim, user_widths
        )
        self.item_tower = Tower(
            item_cardinalities, n_item_continuous, emb_dim, out_dim, item_widths
        )
        self.temperature = temperature

    def in_batch_loss(
        self,
        user_cat: torch.Tensor,
        user_cont: torch.Tensor,
        history: torch.Tensor,
        item_cat: torch.Tensor,
        item_cont: torch.Tensor,
        item_log_popularity: torch.Tensor,
    ) -> torch.Tensor:
        queries = self.query_tower(user_cat, user_cont, history)
        items = self.item_tower(item_cat, item_cont)
        # logQ correction: popular items appear as negatives more often than the
        # catalog would, so their logits are discounted by their sampling probability.
        logits = queries @ items.T / self.temperature - item_log_popularity[None, :]
        labels = torch.arange(len(queries))
        # Rows where the same item is the positive for several users are not negatives.
        item_ids = item_cat[:, 0]
        same_item = (item_ids[None, :] == item_ids[:, None]) & ~torch.eye(
            len(queries), dtype=torch.bool
        )
        logits = logits.masked_fill(same_item, -1e9)
        return nn.functional.cross_entropy(logits, labels)


class DLRM(nn.Module):
    """DLRM: sparse embeddings, bottom MLP, pairwise dot interaction, top MLP -> logit."""

    def __init__(
        self,
        cardinalities: list[int],
        n_dense: int,
        emb_dim: int,
        widths: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = CategoricalEmbeddings(cardinalities, emb_dim, widths)
        self.bottom_mlp = mlp([n_dense, 32, emb_dim])
        n_vectors = len(cardinalities) + 1
        n_pairs = n_vectors * (n_vectors - 1) // 2
        self.top_mlp = mlp([emb_dim + n_pairs, 64, 32, 1], final_activation=False)
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        dense_vector = self.bottom_mlp(dense)
        vectors = torch.cat([dense_vector[:, None, :], self.embeddings(sparse)], dim=1)
        interactions = torch.bmm(vectors, vectors.transpose(1, 2))
        pairs = interactions[:, self.pair_rows, self.pair_cols]
        return self.top_mlp(torch.cat([dense_vector, pairs], dim=1)).squeeze(1)


class QueryEncoder(nn.Module):
    """Serving form of the query tower: user features + history -> query vectors [B, D + 1].

    The scores an inner-product index returns are `q·v / temperature + prior_weight *
    log_trend(item)`: the last coordinate (here `prior_weight`, on the item side the
    item's log recent popularity, see `item_vectors`) adds a popularity prior, which is
    what a user with no history and few features is served by. `history` is optional so
    that a caller without it (the compatibility probe) gets the history-free answer.
    """

    def __init__(
        self, tower: QueryTower, temperature: float, prior_weight: float, history_length: int
    ) -> None:
        super().__init__()
        self.tower = tower
        self.temperature = temperature
        self.prior_weight = prior_weight
        self.history_length = history_length

    def forward(
        self,
        user_categorical: torch.Tensor,
        user_continuous: torch.Tensor,
        user_history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if user_history is None:
            user_history = torch.zeros(
                (user_categorical.shape[0], self.history_length), dtype=torch.int64
            )
        query = self.tower(user_categorical, user_continuous, user_history) / self.temperature
        prior = torch.full((query.shape[0], 1), self.prior_weight, dtype=query.dtype)
        return torch.cat([query, prior], dim=1)


def item_vectors(
    item_tower: Tower, categorical: torch.Tensor, continuous: torch.Tensor, log_trend: torch.Tensor
) -> torch.Tensor:
    """The index side of `QueryEncoder`: [N, D] item vectors with log_trend appended."""
    with torch.no_grad():
        return torch.cat([item_tower(categorical, continuous), log_trend[:, None]], dim=1)


class RankingScorer(nn.Module):
    """Serving form of the DLRM: one user against C candidates -> click probabilities [B, C].

    Input names match the Triton tensors, so the same TorchScript file runs in the Python
    backend here and in the `pytorch_libtorch` backend of a production image.
    """

    def __init__(self, dlrm: DLRM) -> None:
        super().__init__()
        self.dlrm = dlrm

    def forward(
        self,
        user_categorical: torch.Tensor,
        user_continuous: torch.Tensor,
        item_categorical: torch.Tensor,
        item_continuous: torch.Tensor,
    ) -> torch.Tensor:
        batch, candidates = item_categorical.shape[0], item_categorical.shape[1]
        user_cat = user_categorical[:, None, :].expand(batch, candidates, -1)
        user_cont = user_continuous[:, None, :].expand(batch, candidates, -1)
        sparse = torch.cat([user_cat, item_categorical], dim=2).reshape(batch * candidates, -1)
        dense = torch.cat([user_cont, item_continuous], dim=2).reshape(batch * candidates, -1)
        return torch.sigmoid(self.dlrm(sparse, dense)).reshape(batch, candidates)
