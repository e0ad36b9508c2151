"""Next-item sequence models trained with full-softmax cross-entropy over the catalogue
(the form of Klenitskiy & Vasilev 2023): a causal self-attention encoder (SASRec, and the
product's session model with time gaps, exported to ``core.session``) and GRU4Rec.

Training data: each user's items in time order, cut into windows of ``max_len`` inputs;
every event with an earlier one is a target exactly once per epoch, predicted from up to
``max_len`` items before it (a window's leading targets, already counted in the previous
window, are context only). The first window starts at a random offset each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.session import BLOCK_FIELDS, GAP_BUCKETS, LN_EPS, Block, SessionModel, gap_buckets
from training.data import Interactions, index_of

THREADS = 1
"""Torch threads while a sequence model trains or scores: one, so results repeat and a
busy machine does not stall the intra-op thread pool."""


@dataclass(frozen=True, slots=True)
class SeqConfig:
    kind: str = "sasrec"
    """"sasrec" (self-attention) or "gru4rec"."""
    dim: int = 64
    blocks: int = 1
    """Self-attention blocks, or GRU layers."""
    max_len: int = 50
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    time_gaps: bool = False
    """Self-attention only: add the gaps to the previous and next event to each input."""
    content: bool = False
    """Self-attention only: add a learned projection of the two-tower item vector to each
    item's embedding (items seen little in training borrow from their text and genres)."""
    bias: bool = False
    """A learned per-item logit bias."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


SESSION = SeqConfig(
    kind="sasrec",
    blocks=1,
    max_len=20,
    dropout=0.3,
    lr=5e-3,
    epochs=10,
    time_gaps=True,
    content=True,
    bias=True,
)
"""The product's session model (``training.train``, the evaluation's bundle): one block,
time gaps, the two-tower item vectors as content, as many items as the dataflow keeps
per user (``fold.recent_items``, 20); chosen on the evaluation's validation slice
(reports/eval/tuning.json)."""


@dataclass(frozen=True, slots=True)
class Sequences:
    """Each user's catalogue rows and times, oldest first (users with >= 1 known event)."""

    users: list[str]
    rows: list[np.ndarray]
    ts: list[np.ndarray]


def user_sequences(inter: Interactions, item_ids: list[str]) -> Sequences:
    """Per user, in time order; events on items outside ``item_ids`` are left out."""
    rows = index_of(inter.item_ids, item_ids)
    keep = rows >= 0
    users, codes = np.unique(inter.user_ids[keep], return_inverse=True)
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")  # time order holds inside each user
    r, t = rows[keep][order], inter.ts[keep][order]
    cuts = np.cumsum(np.bincount(codes, minlength=len(users)))[:-1]
    return Sequences(users.tolist(), np.split(r, cuts), np.split(t, cuts))


# --- the models ---------------------------------------------------------------------


class SelfAttentive(nn.Module):
    """SASRec with a tied item table; optionally time-gap and content inputs. The exact
    function ``core.session.SessionModel`` computes in numpy (``export``)."""

    content: Tensor
    """(n_items, text dim) item vectors, a buffer registered when ``cfg.content``."""

    def __init__(self, n_items: int, cfg: SeqConfig, content: np.ndarray | None = None) -> None:
        super().__init__()
        d = cfg.dim
        self.cfg, self.n_items = cfg, n_items
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)  # last row: padding
        nn.init.normal_(self.emb.weight[:n_items], std=d**-0.5)
        self.proj = None
        if cfg.content:
            if content is None:
                raise ValueError("content=True needs the item vectors")
            self.register_buffer("content", torch.as_tensor(content, dtype=torch.float32))
            self.proj = nn.Linear(content.shape[1], d, bias=False)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.gap_prev = nn.Embedding(GAP_BUCKETS, d) if cfg.time_gaps else None
        self.gap_next = nn.Embedding(GAP_BUCKETS, d) if cfg.time_gaps else None
        self.blocks = nn.ModuleList(_Block(d, cfg.dropout) for _ in range(cfg.blocks))
        self.lnf = nn.LayerNorm(d, eps=LN_EPS)
        self.bias = nn.Parameter(torch.zeros(n_items)) if cfg.bias else None
        self.drop = nn.Dropout(cfg.dropout)

    def table(self) -> Tensor:
        """(n_items + 1, d) item embeddings, the padding row zero."""
        w = self.emb.weight
        if self.proj is None:
            return w
        extra = F.pad(self.proj(self.content), (0, 0, 0, 1))
        return w + extra

    def forward(self, items: Tensor, prev: Tensor, nxt: Tensor) -> Tensor:
        """(B, L) padded-left rows and gap buckets -> (B, L, d) states."""
        n = items.shape[1]
        real = items != self.n_items
        x = self.table()[items] * math.sqrt(self.cfg.dim)
        x = x + self.pos(torch.arange(n - 1, -1, -1))
        if self.gap_prev is not None and self.gap_next is not None:
            x = x + self.gap_prev(prev) + self.gap_next(nxt)
        x = self.drop(x) * real[..., None]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        # A padding position attends to itself only (its output is never used).
        mask = causal[None] & (real[:, None, :] | torch.eye(n, dtype=torch.bool)[None])
        for b in self.blocks:
            x = b(x, mask) * real[..., None]
        out: Tensor = self.lnf(x)
        return out

    def logits(self, h: Tensor) -> Tensor:
        out = h @ self.table()[: self.n_items].T
        return out + self.bias if self.bias is not None else out

    @torch.no_grad()
    def export(self) -> SessionModel:
        def f32(t: Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        d = self.cfg.dim
        zeros = np.zeros((GAP_BUCKETS, d), np.float32)
        blocks = tuple(cast(_Block, b).export(f32) for b in self.blocks)
        return SessionModel(
            item_emb=f32(self.table()[: self.n_items]),
            item_bias=f32(self.bias) if self.bias is not None else np.zeros(self.n_items, "f4"),
            pos=f32(self.pos.weight),
            gap_prev=f32(self.gap_prev.weight) if self.gap_prev is not None else zeros,
            gap_next=f32(self.gap_next.weight) if self.gap_next is not None else zeros,
            blocks=blocks,
            lnf_g=f32(self.lnf.weight),
            lnf_b=f32(self.lnf.bias),
        )


class _Block(nn.Module):
    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
        self.ff1, self.ff2 = nn.Linear(d, d), nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q_in = self.ln1(x)
        q, k, v = self.q(q_in), self.k(x), self.v(x)
        logits = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])
        w = self.drop(torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1))
        x = q_in + self.drop(self.o(w @ v))
        x = self.ln2(x)
        out: Tensor = x + self.drop(self.ff2(self.drop(F.relu(self.ff1(x)))))
        return out

    def export(self, f32: Callable[[Tensor], np.ndarray]) -> Block:
        lin = {"q": self.q, "k": self.k, "v": self.v, "o": self.o, "1": self.ff1, "2": self.ff2}
        values = {}
        for name in BLOCK_FIELDS:
            if name.startswith("ln"):
                ln = self.ln1 if name[2] == "1" else self.ln2
                values[name] = f32(ln.weight if name.endswith("g") else ln.bias)
            else:
                layer = lin[name[1]]
                values[name] = f32(layer.weight.T if name[0] == "w" else layer.bias)
        return Block(**values)


class Gru4Rec(nn.Module):
    """GRU4Rec: item embedding -> GRU -> a linear layer over the catalogue."""

    def __init__(self, n_items: int, cfg: SeqConfig) -> None:
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        self.emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)
        self.gru = nn.GRU(cfg.dim, cfg.dim, num_layers=cfg.blocks, batch_first=True)
        self.out = nn.Linear(cfg.dim, n_items, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, items: Tensor, prev: Tensor, nxt: Tensor) -> Tensor:
        h, _ = self.gru(self.drop(self.emb(items)))
        out: Tensor = self.drop(h)
        return out

    def logits(self, h: Tensor) -> Tensor:
        out: Tensor = self.out(h)
        return out


def new_model(
    n_items: int, cfg: SeqConfig, seed: int, content: np.ndarray | None = None
) -> SelfAttentive | Gru4Rec:
    """A freshly initialised model; the same seed draws the same weights."""
    if cfg.kind not in ("sasrec", "gru4rec"):
        raise ValueError(f"unknown sequence model {cfg.kind!r}")
    with torch_threads():
        torch.manual_seed(seed)
        if cfg.kind == "sasrec":
            return SelfAttentive(n_items, cfg, content)
        return Gru4Rec(n_items, cfg)


# --- training -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Windows:
    items: np.ndarray  # (N, L) inputs, padded left with n_items
    targets: np.ndarray  # (N, L) next rows, -100 where no loss
    prev: np.ndarray  # (N, L) gap buckets to the previous input
    nxt: np.ndarray  # (N, L) gap buckets to the target


def windows(seqs: Sequences, n_items: int, max_len: int, rng: np.random.Generator) -> Windows:
    """One epoch's windows; the first window of each user ends at a random offset."""
    items, targets, prev, nxt = [], [], [], []
    for rows, ts in zip(seqs.rows, seqs.ts, strict=True):
        m = len(rows)
        if m < 2:
            continue
        first = int(rng.integers(1, max_len + 1))
        ends = [*range(min(m, 1 + first), m, max_len), m]  # exclusive target ends
        start = 1
        for end in ends:
            lo = max(0, end - 1 - max_len)  # inputs rows[lo:end-1], targets rows[lo+1:end]
            inp, tgt = rows[lo : end - 1], rows[lo + 1 : end].copy()
            tgt[: max(0, start - lo - 1)] = -100  # counted by the previous window
            gp = np.full(len(inp), np.nan)
            gp[1:] = np.diff(
                ts[lo : end - 1]
            )  # the first input's previous is unknown, as in serving
            pad = max_len - len(inp)
            items.append(np.r_[np.full(pad, n_items), inp])
            targets.append(np.r_[np.full(pad, -100), tgt])
            prev.append(np.r_[np.zeros(pad, np.int64), gap_buckets(gp)])
            nxt.append(
                np.r_[np.zeros(pad, np.int64), gap_buckets(ts[lo + 1 : end] - ts[lo : end - 1])]
            )
            start = end
    return Windows(*(np.asarray(a, dtype=np.int64) for a in (items, targets, prev, nxt)))


@contextmanager
def torch_threads(n: int = THREADS) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


SeqModel = SelfAttentive | Gru4Rec
"""A next-item model: (B, L) rows -> states (``forward``), states -> catalogue logits."""


def fit_sequences(
    model: SeqModel,
    seqs: Sequences,
    cfg: SeqConfig,
    seed: int,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> list[float]:
    """Adam over shuffled windows, full-softmax cross-entropy at every target; returns
    each epoch's mean loss. Deterministic for a seed (one thread). ``on_epoch(epoch)``
    is called after each epoch with the model in eval mode (tuning reads checkpoints)."""
    rng = np.random.default_rng([seed, 11])
    with torch_threads():
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        losses = []
        model.train()
        for epoch in range(cfg.epochs):
            w = windows(seqs, model.n_items, cfg.max_len, rng)
            t = [torch.from_numpy(a) for a in (w.items, w.targets, w.prev, w.nxt)]
            perm = torch.from_numpy(rng.permutation(len(w.items)))
            total, count = 0.0, 0
            for s in range(0, len(perm), cfg.batch_size):
                b = perm[s : s + cfg.batch_size]
                h = model(t[0][b], t[2][b], t[3][b])
                tgt = t[1][b]
                keep = tgt >= 0
                loss = F.cross_entropy(model.logits(h[keep]), tgt[keep])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * int(keep.sum())
                count += int(keep.sum())
            losses.append(total / max(count, 1))
            if log:
                log(f"  {cfg.kind} epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f}")
            if on_epoch:
                model.eval()
                on_epoch(epoch + 1)
                model.train()
        model.eval()
    return losses


@torch.no_grad()
def next_scores(
    model: SeqModel,
    rows: Sequence[Sequence[int]],
    ts: Sequence[Sequence[float]],
    now: Sequence[float],
    max_len: int,
) -> np.ndarray:
    """(B, n_items) logits after each of B histories (lists of rows/times, oldest first,
    asked at ``now``), with the training's left padding. Call inside ``torch_threads``."""
    n_items = model.n_items
    items = np.full((len(rows), max_len), n_items, dtype=np.int64)
    prev = np.zeros_like(items)
    nxt = np.zeros_like(items)
    for i, (hist_rows, hist_ts, at) in enumerate(zip(rows, ts, now, strict=True)):
        r, t = np.asarray(hist_rows)[-max_len:], np.asarray(hist_ts, dtype=np.float64)[-max_len:]
        if not len(r):
            continue
        items[i, max_len - len(r) :] = r
        gp = np.full(len(t), np.nan)
        gp[1:] = np.diff(t)
        prev[i, max_len - len(r) :] = gap_buckets(gp)
        nxt[i, max_len - len(r) :] = gap_buckets(np.append(t[1:], at) - t)
    h = model(torch.from_numpy(items), torch.from_numpy(prev), torch.from_numpy(nxt))
    scores: np.ndarray = model.logits(h[:, -1]).numpy()
    return scores


def train_session_model(
    inter: Interactions,
    item_ids: list[str],
    cfg: SeqConfig,
    seed: int,
    content: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[SessionModel, list[float]]:
    """The product's session model: a self-attention encoder trained on ``inter``,
    exported for numpy serving."""
    if cfg.kind != "sasrec":
        raise ValueError("the session model is a self-attention encoder (kind='sasrec')")
    model = new_model(len(item_ids), cfg, seed, content)
    assert isinstance(model, SelfAttentive)
    losses = fit_sequences(model, user_sequences(inter, item_ids), cfg, seed, log)
    return model.export(), losses


def session_holdout_hr(
    model: SessionModel, train: Interactions, test: Interactions, item_ids: list[str], k: int = 10
) -> float | None:
    """HR@k of the exported (numpy) model on the held-out events, in time order, each
    predicted from the user's items before it (training and earlier held-out events),
    items already seen left out. None when no held-out event has a history."""
    seqs = user_sequences(train, item_ids)
    hist = {
        u: (r.tolist(), t.tolist()) for u, r, t in zip(seqs.users, seqs.rows, seqs.ts, strict=True)
    }
    rows = index_of(test.item_ids, item_ids)
    hits = total = 0
    for u, r, t in zip(test.user_ids.tolist(), rows.tolist(), test.ts.tolist(), strict=True):
        if r < 0:
            continue
        h_rows, h_ts = hist.setdefault(u, ([], []))
        if h_rows:
            h, _ = model.encode(h_rows[-model.max_len :], h_ts[-model.max_len :], t)
            scores = model.item_emb @ h + model.item_bias
            scores[h_rows] = -np.inf
            top = np.argpartition(-scores, k)[:k]
            hits += int(r in top.tolist())
            total += 1
        h_rows.append(r)
        h_ts.append(t)
    return hits / total if total else None
