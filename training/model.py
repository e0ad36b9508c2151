"""The two-tower model: item tower, the dataflow's pooling, the served user head, the loss.

The user tower is split where serving splits it: the decayed pooling of item vectors is
the dataflow's fold (``core.fold``), and only the small head after it is learned
here and exported as ``core.records.UserHead`` for numpy serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.items import ItemHead
from core.records import ItemRecord, UserHead
from training.data import Interactions, index_of


@dataclass(frozen=True, slots=True)
class ModelConfig:
    dim: int = 64
    id_dim: int = 32
    item_hidden: int = 256
    head_hidden: int = 128
    id_dropout: float = 0.2
    # 0.14: best of 0.07/0.1/0.14/0.2/0.3 on the evaluation's validation slice with the 60 s
    # half-life (with a 3600 s half-life 0.1 ranks best).
    temperature: float = 0.14

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def category_matrix(items: list[ItemRecord]) -> tuple[np.ndarray, list[str]]:
    """Multi-hot categories (n_items x n_categories) over a sorted vocabulary."""
    vocab = sorted({c for i in items for c in i.categories})
    col = {c: j for j, c in enumerate(vocab)}
    m = np.zeros((len(items), len(vocab)), dtype=np.float32)
    for r, item in enumerate(items):
        for c in item.categories:
            m[r, col[c]] = 1.0
    return m, vocab


def id_index(train: Interactions, item_ids: list[str]) -> np.ndarray:
    """Id-embedding row per item: 1.. for items seen in training, 0 (shared) otherwise."""
    seen = np.zeros(len(item_ids), dtype=bool)
    seen[index_of(train.item_ids, item_ids)] = True
    index = np.zeros(len(item_ids), dtype=np.int64)
    index[seen] = np.arange(1, seen.sum() + 1)
    return index


class ItemTower(nn.Module):
    """Item vector from frozen text, a learned id embedding and categories.

    ``id_index[i]`` is item i's id-embedding row; 0 is shared by items unseen in
    training. Dropping ids to 0 at random while training teaches the MLP to place
    items from text and categories alone, which is all a cold item has.
    """

    # buffers (registered in __init__): they move with the module, they are not trained
    text: Tensor
    categories: Tensor
    id_index: Tensor

    def __init__(
        self,
        text: np.ndarray,
        categories: np.ndarray,
        id_index: np.ndarray,
        cfg: ModelConfig,
    ) -> None:
        super().__init__()
        self.id_dropout = cfg.id_dropout
        self.register_buffer("text", torch.as_tensor(text, dtype=torch.float32))
        self.register_buffer("categories", torch.as_tensor(categories, dtype=torch.float32))
        self.register_buffer("id_index", torch.as_tensor(id_index, dtype=torch.long))
        self.ids = nn.Embedding(int(id_index.max(initial=0)) + 1, cfg.id_dim)
        nn.init.normal_(self.ids.weight, std=0.05)
        width = self.text.shape[1] + cfg.id_dim + self.categories.shape[1]
        self.mlp = nn.Sequential(
            nn.Linear(width, cfg.item_hidden), nn.ReLU(), nn.Linear(cfg.item_hidden, cfg.dim)
        )

    def forward(self) -> Tensor:
        """Vectors of the whole catalogue, L2-normalised (n_items x dim)."""
        ids = self.id_index
        if self.training and self.id_dropout > 0:
            ids = ids.masked_fill(torch.rand(ids.shape) < self.id_dropout, 0)
        x = torch.cat([self.text, self.ids(ids), self.categories], dim=1)
        return F.normalize(self.mlp(x), dim=-1)

    def export_head(self, category_names: list[str]) -> ItemHead:
        """The tower for an item without a learned id (``id_index`` 0) as numpy weights:
        ``ItemHead.embed(text, categories)`` equals ``forward`` in eval mode for such an
        item. ``category_names`` are the columns of ``categories`` (``category_matrix``)."""
        if len(category_names) != self.categories.shape[1]:
            raise ValueError(
                f"{len(category_names)} category names for {self.categories.shape[1]} columns"
            )
        first, second = self.mlp[0], self.mlp[2]
        assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
        return ItemHead(
            w1=_f32(first.weight.T),
            b1=_f32(first.bias),
            w2=_f32(second.weight.T),
            b2=_f32(second.bias),
            id0=_f32(self.ids.weight[0]),
            category_names=list(category_names),
        )


class UserHeadNet(nn.Module):
    """u = normalise(p + relu(p W1 + b1) W2 + b2), p = normalise(pooled): ``UserHead.apply``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        # Start as the identity on p, so early training shapes the item space first.
        nn.init.zeros_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        p = F.normalize(pooled, dim=-1)
        return F.normalize(p + self.lin2(F.relu(self.lin1(p))), dim=-1)

    def export(self) -> UserHead:
        """The same function as numpy weights, with shapes (d,h),(h,),(h,d),(d,)."""
        return UserHead(
            w1=_f32(self.lin1.weight.T),
            b1=_f32(self.lin1.bias),
            w2=_f32(self.lin2.weight.T),
            b2=_f32(self.lin2.bias),
        )


class TwoTower(nn.Module):
    def __init__(
        self, text: np.ndarray, categories: np.ndarray, id_index: np.ndarray, cfg: ModelConfig
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = ItemTower(text, categories, id_index, cfg)
        self.head = UserHeadNet(cfg.dim, cfg.head_hidden)

    def users(self, item_vecs: Tensor, hist_items: Tensor, hist_weights: Tensor) -> Tensor:
        """User vectors from histories: pooled = sum_j weight_j * item_vec_j, then the head.

        ``hist_weights`` already hold w(type_j) * 2^(-(t - t_j)/half_life) (0 for padding),
        computed with the dataflow's own ``decay_weights``.
        """
        pooled = torch.einsum("bh,bhd->bd", hist_weights, item_vecs[hist_items])
        users: Tensor = self.head(pooled)
        return users

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """Serving item vectors: no id dropout, float32, L2-normalised."""
        was = self.training
        self.eval()
        vecs: np.ndarray = self.items().numpy().astype(np.float32)
        self.train(was)
        return vecs


def _f32(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def in_batch_softmax_loss(
    users: Tensor,
    item_vecs: Tensor,
    targets: Tensor,
    log_q: Tensor,
    temperature: float,
) -> Tensor:
    """Sampled softmax over the batch's targets with logQ correction.

    In-batch negatives are drawn in proportion to item frequency, so popular items are
    over-penalised; subtracting log q(item) from their logits undoes that bias. The same
    item at another row of the batch is a positive, not a negative, so it is masked out.
    """
    logits = users @ item_vecs[targets].T / temperature - log_q[targets][None, :]
    same = targets[:, None] == targets[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(targets)))
