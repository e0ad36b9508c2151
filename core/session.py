"""The learned session model, applied in numpy: next-item scores from the user's recent
items and the time gaps between them. Pure functions, no torch, no I/O.

A causal self-attention encoder (SASRec's block: pre-norm attention, point-wise feed
forward, one head) reads the recent items oldest first. Each position's input is

    x_j = sqrt(d) * e[item_j] + p[n-1-j] + g_prev[bucket(t_j - t_(j-1))] + g_next[bucket(t_(j+1) - t_j)]

with ``t_n`` = the request time for the newest item: the encoder knows how long the user
paused between picks and since the last one. Positions count back from the newest, so a
short session uses the same rows as the end of a long one. The newest position's output
``h`` scores an item by ``e[item] . h + bias[item]``, the same item table as the input
(tied, as in SASRec), trained with full softmax over the catalogue
(``training.sequence``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GAP_BUCKETS = 32
"""Time-gap buckets: 0 = no neighbour (the first item), then 1 + floor(log2(1 + seconds))
capped at the last bucket (2^30 s, beyond any real pause)."""
LN_EPS = 1e-8
"""LayerNorm epsilon, the same in torch (``training.sequence``) and here."""


def gap_buckets(gaps: np.ndarray) -> np.ndarray:
    """Bucket of each gap in seconds; NaN (no neighbour) -> 0, negative gaps count as 0 s."""
    g = np.asarray(gaps, dtype=np.float64)
    out = np.zeros(g.shape, dtype=np.int64)
    known = ~np.isnan(g)
    out[known] = 1 + np.minimum(
        GAP_BUCKETS - 2, np.floor(np.log2(1.0 + np.maximum(g[known], 0.0))).astype(np.int64)
    )
    return out


def gap_inputs(ts: np.ndarray, next_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bucket of the gap to the previous item, bucket of the gap to the next one) per
    position of one sequence; the first item has no previous one (bucket 0)."""
    prev = np.empty(len(ts))
    prev[:1] = np.nan
    prev[1:] = np.diff(ts)
    return gap_buckets(prev), gap_buckets(next_ts - ts)


@dataclass(frozen=True, slots=True)
class Block:
    """One pre-norm self-attention block; matrices are (in, out)."""

    ln1_g: np.ndarray
    ln1_b: np.ndarray
    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray


BLOCK_FIELDS = tuple(Block.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class SessionModel:
    """The exported weights; ``item_emb`` rows follow the catalogue's item order."""

    item_emb: np.ndarray
    """(n_items, d)."""
    item_bias: np.ndarray
    """(n_items,)."""
    pos: np.ndarray
    """(max_len, d): row k is the position k items before the newest."""
    gap_prev: np.ndarray
    """(GAP_BUCKETS, d); zeros when the model was trained without time gaps."""
    gap_next: np.ndarray
    blocks: tuple[Block, ...]
    lnf_g: np.ndarray
    lnf_b: np.ndarray

    @property
    def max_len(self) -> int:
        return int(self.pos.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_emb.shape[1])

    def encode(
        self, rows: Sequence[int] | np.ndarray, ts: Sequence[float] | np.ndarray, now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(h, attention): the session vector after the newest of ``rows`` (catalogue rows,
        oldest first, at times ``ts``) asked at ``now``, and the last block's attention of
        the newest position over the items used (the last ``max_len``), summing to 1.
        Earlier blocks run over every position; the last one only for the newest."""
        rows = np.asarray(rows, dtype=np.int64)[-self.max_len :]
        ts = np.asarray(ts, dtype=np.float64)[-self.max_len :]
        n = len(rows)
        if n == 0:
            raise ValueError("encode needs at least one item")
        prev, nxt = gap_inputs(ts, np.append(ts[1:], now))
        x = (
            self.item_emb[rows] * np.float32(math.sqrt(self.dim))
            + self.pos[n - 1 - np.arange(n)]
            + self.gap_prev[prev]
            + self.gap_next[nxt]
        )
        if len(self.blocks) > 1:
            causal = np.tril(np.ones((n, n), dtype=bool))
            for b in self.blocks[:-1]:
                x, _ = _block(x, b, causal)
        # The last block only for the newest position: all that is read of it.
        y, attn = _newest(x, self.blocks[-1])
        return _ln_vector(y, self.lnf_g, self.lnf_b).astype(np.float32), attn

    def scores(self, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Logits of catalogue ``rows`` after the session ``h`` (higher: likelier next)."""
        logits: np.ndarray = self.item_emb[rows] @ h + self.item_bias[rows]
        return logits


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    out: np.ndarray = (x - mu) / np.sqrt(var + LN_EPS) * g + b
    return out


def _ln_vector(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_layer_norm`` of one vector, without numpy's mean machinery (a few us each)."""
    c = x - x.sum() / x.shape[0]
    out: np.ndarray = c / np.sqrt(c @ c / x.shape[0] + LN_EPS) * g + b
    return out


def _newest(x: np.ndarray, b: Block) -> tuple[np.ndarray, np.ndarray]:
    """``_block``'s output at the newest position (which attends to every position)."""
    q_in = _ln_vector(x[-1], b.ln1_g, b.ln1_b)
    q = q_in @ b.wq + b.bq
    logits = (x @ b.wk + b.bk) @ q / np.float32(math.sqrt(q.shape[0]))
    w = np.exp(logits - logits.max())
    w /= w.sum()
    y = q_in + (w @ (x @ b.wv + b.bv)) @ b.wo + b.bo
    y = _ln_vector(y, b.ln2_g, b.ln2_b)
    return y + np.maximum(y @ b.w1 + b.b1, 0.0) @ b.w2 + b.b2, w


def _block(x: np.ndarray, b: Block, causal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q_in = _layer_norm(x, b.ln1_g, b.ln1_b)
    q = q_in @ b.wq + b.bq
    k = x @ b.wk + b.bk
    v = x @ b.wv + b.bv
    logits = np.where(causal, (q @ k.T) / np.float32(math.sqrt(q.shape[1])), -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    x = q_in + (w @ v) @ b.wo + b.bo
    x = _layer_norm(x, b.ln2_g, b.ln2_b)
    x = x + np.maximum(x @ b.w1 + b.b1, 0.0) @ b.w2 + b.b2
    return x.astype(np.float32), w


def to_arrays(model: SessionModel) -> dict[str, np.ndarray]:
    """Flat name -> array, for ``np.savez`` (``core.artifacts``)."""
    out = {
        "item_emb": model.item_emb,
        "item_bias": model.item_bias,
        "pos": model.pos,
        "gap_prev": model.gap_prev,
        "gap_next": model.gap_next,
        "lnf_g": model.lnf_g,
        "lnf_b": model.lnf_b,
    }
    for i, b in enumerate(model.blocks):
        out |= {f"block{i}_{f}": getattr(b, f) for f in BLOCK_FIELDS}
    return out


def from_arrays(arrays: dict[str, np.ndarray]) -> SessionModel:
    """The inverse of ``to_arrays``; every array as float32. Raises KeyError/ValueError on
    a missing array or inconsistent shapes."""
    a = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    n_blocks = len({k.split("_", 1)[0] for k in a if k.startswith("block")})
    blocks = tuple(Block(**{f: a[f"block{i}_{f}"] for f in BLOCK_FIELDS}) for i in range(n_blocks))
    model = SessionModel(
        a["item_emb"],
        a["item_bias"],
        a["pos"],
        a["gap_prev"],
        a["gap_next"],
        blocks,
        a["lnf_g"],
        a["lnf_b"],
    )
    _check(model)
    return model


def _check(m: SessionModel) -> None:
    n, d = m.item_emb.shape if m.item_emb.ndim == 2 else (-1, -1)
    want = {
        "item_bias": (m.item_bias.shape, (n,)),
        "pos": (m.pos.shape[1:], (d,)),
        "gap_prev": (m.gap_prev.shape, (GAP_BUCKETS, d)),
        "gap_next": (m.gap_next.shape, (GAP_BUCKETS, d)),
        "lnf": (m.lnf_g.shape + m.lnf_b.shape, (d, d)),
    }
    for i, b in enumerate(m.blocks):
        want[f"block{i}.wq"] = (b.wq.shape, (d, d))
        want[f"block{i}.w2"] = (b.w2.shape[1:], (d,))
    bad = {k: f"{got} != {exp}" for k, (got, exp) in want.items() if tuple(got) != exp}
    if bad or not m.blocks or m.pos.shape[0] < 1:
        raise ValueError(f"inconsistent session model: {bad or 'no blocks or positions'}")
