"""Sequence-model baselines: SASRec and GRU4Rec, trained with full-softmax cross-entropy
(``training.sequence``) on the events before the cutoff, frozen there, and fed each
user's live history (the events before the cutoff and every test event so far, the last
``max_len``) at each evaluated event. Users with no history get popularity.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NotRequired, TypedDict

import numpy as np

from evaluation.baselines import Popularity, top_k
from evaluation.scoring import rank_of, summarize
from evaluation.split import Split
from training.data import Interactions, index_of
from training.sequence import (
    Gru4Rec,
    SelfAttentive,
    SeqConfig,
    Sequences,
    fit_sequences,
    new_model,
    next_scores,
    torch_threads,
    user_sequences,
)

# Chosen on the validation slice (``python -m evaluation.run --tune-sequence baselines``;
# every attempt is in reports/eval/tuning.json): d=64, max length 50, full softmax.
SASREC = SeqConfig(kind="sasrec", dim=64, blocks=1, max_len=50, dropout=0.2, lr=5e-3, epochs=15)
GRU4REC = SeqConfig(kind="gru4rec", dim=64, blocks=1, max_len=50, dropout=0.3, lr=1e-2, epochs=20)
BATCH = 256
SEEDS = (1, 2, 3)
"""Each sequence baseline is trained and replayed once per seed; reported as mean +- std."""


class SequenceBaseline:
    """A trained sequence model behind the replay's system interface."""

    def __init__(
        self, name: str, model: SelfAttentive | Gru4Rec, seqs: Sequences, popularity: Popularity
    ) -> None:
        self.name = name
        self.model = model
        self.max_len = model.cfg.max_len
        self.pop = popularity
        self._ready: dict[str, deque[list[int] | None]] = {}
        self.history: dict[str, tuple[list[int], list[float]]] = {
            u: (r.tolist(), t.tolist())
            for u, r, t in zip(seqs.users, seqs.rows, seqs.ts, strict=True)
        }

    @classmethod
    def trained(
        cls,
        name: str,
        train: Interactions,
        item_ids: list[str],
        popularity: Popularity,
        cfg: SeqConfig,
        seed: int,
        log: Callable[[str], None] | None = None,
    ) -> SequenceBaseline:
        seqs = user_sequences(train, item_ids)
        model = new_model(len(item_ids), cfg, seed)
        fit_sequences(model, seqs, cfg, seed, log)
        return cls(name, model, seqs, popularity)

    def prepare(self, users: list[str], rows: list[int], ts: list[float], k: int) -> None:
        """Score every test event of the stream ahead, in batches: the model is frozen, so
        its answer before an event depends only on the user's history then, which is the
        training history plus the user's earlier test events. ``recommend`` then takes
        the precomputed ranking (the best ``k`` + history-length rows, so ``k`` remain
        after any exclusion of items in the history)."""
        hist = {u: (list(r), list(t)) for u, (r, t) in self.history.items()}
        todo: list[tuple[str, list[int], list[float], float, int]] = []
        self._ready = {}
        for u, r, t in zip(users, rows, ts, strict=True):
            self._ready.setdefault(u, deque())
            h_rows, h_ts = hist.setdefault(u, ([], []))
            if h_rows:
                todo.append((u, h_rows[-self.max_len :], h_ts[-self.max_len :], t, len(h_rows)))
            else:
                todo.append((u, [], [], t, 0))
            h_rows.append(r)
            h_ts.append(t)
        for s in range(0, len(todo), BATCH):
            chunk = todo[s : s + BATCH]
            scored = [c for c in chunk if c[4]]
            with torch_threads():
                logits = (
                    next_scores(
                        self.model,
                        [c[1] for c in scored],
                        [c[2] for c in scored],
                        [c[3] for c in scored],
                        self.max_len,
                    )
                    if scored
                    else np.zeros((0, self.model.n_items))
                )
            it = iter(logits)
            for u, _, _, _, n_hist in chunk:
                self._ready[u].append(top_k(next(it), (), k + n_hist) if n_hist else None)

    def recommend(self, user: str, k: int, now: float, exclude: set[int], fresh: int) -> list[int]:
        ready = self._ready.get(user)
        if ready:
            ranked = ready.popleft()
            if ranked is None:
                return self.pop.recommend(user, k, list(exclude))
            return [r for r in ranked if r not in exclude][:k]
        rows, ts = self.history.get(user, ([], []))
        if not rows:
            return self.pop.recommend(user, k, list(exclude))
        with torch_threads():
            scores = next_scores(self.model, [rows], [ts], [now], self.max_len)[0]
        return top_k(scores, list(exclude), k)

    def observe(self, user: str, row: int, ts: float) -> None:
        rows, times = self.history.setdefault(user, ([], []))
        rows.append(row)
        times.append(ts)


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def ranks_on(
    split: Split, item_ids: list[str], system: SequenceBaseline, k: int = 10
) -> np.ndarray:
    """The replay's protocol for one sequence system: before each test event its top-k
    for the user, seen items left out; then the event joins the history."""
    train_rows = index_of(split.train.item_ids, item_ids)
    test_rows = index_of(split.test.item_ids, item_ids)
    seen: dict[str, set[int]] = {}
    for u, r in zip(split.train.user_ids.tolist(), train_rows.tolist(), strict=True):
        seen.setdefault(u, set()).add(r)
    users, ts = split.test.user_ids.tolist(), split.test.ts.tolist()
    system.prepare(users, test_rows.tolist(), ts, k)
    ranks = np.zeros(len(users), dtype=np.int64)
    for e, (u, r, t) in enumerate(zip(users, test_rows.tolist(), ts, strict=True)):
        ranks[e] = rank_of(system.recommend(u, k, t, seen.get(u, set()), 0), r, k)
        system.pop.observe(u, r, t)
        system.observe(u, r, t)
        seen.setdefault(u, set()).add(r)
    return ranks


class Checkpoint(TypedDict):
    """One point of a configuration's epoch curve on the validation replay."""

    epochs: int
    hr: float
    ndcg: float
    loss: NotRequired[float]


def checkpoints(
    val: Split,
    item_ids: list[str],
    cfg: SeqConfig,
    seed: int,
    every: int,
    log: Callable[[str], None] | None = None,
    content: np.ndarray | None = None,
) -> list[Checkpoint]:
    """Train ``cfg`` on ``val.train`` and replay ``val.test`` every ``every`` epochs:
    [{"epochs", "hr", "ndcg", "loss"}] (one training run gives the whole epoch curve)."""
    seqs = user_sequences(val.train, item_ids)
    model = new_model(len(item_ids), cfg, seed, content if cfg.content else None)
    out: list[Checkpoint] = []
    losses: list[float] = []

    def score(epoch: int) -> None:
        if epoch % every and epoch != cfg.epochs:
            return
        system = SequenceBaseline(cfg.kind, model, seqs, Popularity(val.train, item_ids))
        m = summarize(ranks_on(val, item_ids, system))
        out.append({"epochs": epoch, "hr": round(m["hr"], 4), "ndcg": round(m["ndcg"], 4)})
        if log:
            log(f"  {cfg.kind} {_knobs(cfg)} epoch {epoch}: HR@10 {m['hr']:.4f}")

    losses = fit_sequences(model, seqs, cfg, seed, on_epoch=score)
    for row, loss in zip(out, [losses[r["epochs"] - 1] for r in out], strict=True):
        row["loss"] = round(loss, 4)
    return out


def _knobs(cfg: SeqConfig) -> str:
    return (
        f"lr={cfg.lr} dropout={cfg.dropout} blocks={cfg.blocks} gaps={cfg.time_gaps} "
        f"content={cfg.content} bias={cfg.bias}"
    )


def tune_sequence(
    val: Split,
    item_ids: list[str],
    base: SeqConfig,
    grid: Mapping[str, Sequence[object]],
    seed: int,
    every: int = 5,
    log: Callable[[str], None] = print,
    content: np.ndarray | None = None,
) -> tuple[SeqConfig, float, list[dict[str, object]]]:
    """Coordinate ascent over ``grid`` (one pass, strict improvement); each configuration
    trained once for ``base.epochs`` and scored every ``every`` epochs, its best checkpoint
    counting. Returns the best configuration (epochs = its best checkpoint), its HR@10
    and every attempt."""
    tried: list[dict[str, object]] = []
    cache: dict[SeqConfig, tuple[int, float]] = {}

    def run(cfg: SeqConfig) -> tuple[int, float]:
        if cfg not in cache:
            curve = checkpoints(val, item_ids, cfg, seed, every, log, content)
            best = max(curve, key=lambda r: (r["hr"], -r["epochs"]))
            cache[cfg] = (int(best["epochs"]), float(best["hr"]))
            tried.append({"config": {k: getattr(cfg, k) for k in grid}, "curve": curve})
        return cache[cfg]

    best_cfg, (best_epochs, best_hr) = base, run(base)
    for knob, values in grid.items():
        for v in values:
            over: dict[str, Any] = {knob: v}  # a SeqConfig field, by the grid's name
            cfg = replace(best_cfg, **over)
            epochs, hr = run(cfg)
            if hr > best_hr + 1e-9:
                best_cfg, best_epochs, best_hr = cfg, epochs, hr
    return replace(best_cfg, epochs=best_epochs), best_hr, tried
