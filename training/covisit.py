"""Item-to-item co-visitation: which items users pick right after (or before) each other.

Computed at training time from the same events as the two-tower and published with the
model version inside each item's payload (``extra["covisit"]``: neighbour ids and weights),
so serving can re-rank with "people who just picked X go on to pick Y" against the user's
last items, and evaluation's co-occurrence kNN baseline uses the very same statistic.

    C[a, b] = sum over users, over pairs of their events at most ``window`` positions apart,
              of forward^(b after a) * backward^(b before a) / distance
    S[a, b] = C[a, b] / count[b] ** alpha

``alpha`` damps popular targets (0: raw counts, 0.5: cosine-like); each row keeps its
``top`` neighbours, scaled so the best one is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from core.records import ItemRecord
from training.data import Interactions, index_of

EXTRA_KEY = "covisit"


@dataclass(frozen=True, slots=True)
class CovisitConfig:
    window: int = 5
    forward: float = 1.0
    backward: float = 0.5
    alpha: float = 0.3
    top: int = 50


def covisit_matrix(
    inter: Interactions, item_ids: list[str], cfg: CovisitConfig | None = None
) -> sp.csr_matrix:
    """Row-normalised (max 1) sparse co-visitation, ``top`` neighbours per row."""
    cfg = cfg or CovisitConfig()
    n = len(item_ids)
    rows = index_of(inter.item_ids, item_ids)
    keep = rows >= 0
    _, users = np.unique(inter.user_ids[keep], return_inverse=True)
    users = users.reshape(-1)
    rows = rows[keep]
    order = np.argsort(users, kind="stable")  # time order holds inside each user
    users, rows = users[order], rows[order]
    src, dst, w = [], [], []
    for d in range(1, cfg.window + 1):
        same = users[d:] == users[:-d]
        a, b = rows[:-d][same], rows[d:][same]
        src += [a, b]
        dst += [b, a]
        w += [np.full(len(a), cfg.forward / d), np.full(len(a), cfg.backward / d)]
    if not src:
        return sp.csr_matrix((n, n), dtype=np.float32)
    c = sp.coo_matrix(
        (np.concatenate(w), (np.concatenate(src), np.concatenate(dst))), shape=(n, n)
    ).tocsr()
    c.setdiag(0.0)
    c.eliminate_zeros()
    count = np.bincount(rows, minlength=n).astype(np.float64)
    c = c @ sp.diags(1.0 / np.maximum(count, 1.0) ** cfg.alpha)
    return _top_per_row(c.tocsr(), cfg.top)


def _top_per_row(m: sp.csr_matrix, top: int) -> sp.csr_matrix:
    indptr, indices, data = [0], [], []
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        cols, vals = m.indices[lo:hi], m.data[lo:hi]
        if len(vals) > top:
            pick = np.lexsort((cols, -vals))[:top]
            cols, vals = cols[pick], vals[pick]
        if len(vals):
            vals = vals / vals.max()
        order = np.lexsort((cols, -vals))
        indices.append(cols[order])
        data.append(vals[order])
        indptr.append(indptr[-1] + len(cols))
    return sp.csr_matrix(
        (
            np.concatenate(data).astype(np.float32) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int64),
            np.asarray(indptr),
        ),
        shape=m.shape,
    )


def with_covisit(items: list[ItemRecord], matrix: sp.csr_matrix) -> list[ItemRecord]:
    """Copies of ``items`` whose payload carries their neighbours: [[item_id, weight], ...]."""
    out = []
    for r, it in enumerate(items):
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        nbrs = [
            [items[int(c)].item_id, round(float(v), 4)]
            for c, v in zip(matrix.indices[lo:hi], matrix.data[lo:hi], strict=True)
        ]
        extra = dict(it.extra)
        if nbrs:
            extra[EXTRA_KEY] = nbrs
        else:
            extra.pop(EXTRA_KEY, None)
        out.append(ItemRecord(it.item_id, it.title, list(it.categories), it.popularity, extra))
    return out
