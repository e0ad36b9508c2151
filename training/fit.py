"""Training examples and the optimisation loop.

An example is (history -> next item): the user tower sees the user's previous up to H
events, pooled with the dataflow's decay, and must rank the item they used next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from core.fold import decay_weights
from core.progress import Progress
from training.data import Interactions, index_of
from training.model import TwoTower, in_batch_softmax_loss


def seed_everything(seed: int, threads: int) -> None:
    """Seed torch and fix the thread count of torch and of numpy's BLAS (the
    ``train_threads`` setting): the same seed and thread count then give the same model
    (float reductions split by thread). BLAS and torch threads that wait on each other
    slow down many times over when another job takes a core, so the default is one."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # for the rest of the process, not only a block
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)  # allowed once, before any inter-op work
        except RuntimeError:
            pass


@dataclass(frozen=True, slots=True)
class FitConfig:
    epochs: int = 6
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-5
    history: int = 50
    half_life: float = 3600.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Examples:
    targets: np.ndarray  # (N,) catalogue rows
    hist_items: np.ndarray  # (N, H) catalogue rows, 0 where padded
    hist_weights: np.ndarray  # (N, H) float32 w(type) * decay, 0 where padded

    def __len__(self) -> int:
        return len(self.targets)


def build_examples(
    inter: Interactions,
    item_ids: list[str],
    event_weights: Mapping[str, float],
    history: int,
    half_life: float,
) -> Examples:
    """One example per event that has at least one earlier event of the same user.

    Vectorised: events are grouped by user (stable, so time order holds inside a group)
    and each example's window is the H positions before it, masked to its own user.
    Decay is taken relative to the newest history event, as the fold keeps its state as
    of ``last_ts``; the head normalises, so the reference time does not change the vector.
    """
    rows = index_of(inter.item_ids, item_ids)
    if (rows < 0).any():
        raise ValueError("interactions reference items outside the catalogue; call restrict()")
    weights = inter.weights(event_weights)
    _, users = np.unique(inter.user_ids, return_inverse=True)
    order = np.argsort(users.reshape(-1), kind="stable")
    users, rows, weights = users.reshape(-1)[order], rows[order], weights[order]
    ts = inter.ts[order]

    pos = np.arange(len(users))
    new_user = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(new_user, pos, 0))
    at = pos[pos > first]  # events with some history
    window = at[:, None] + np.arange(-history, 0)[None, :]
    valid = window >= first[at][:, None]
    window = np.where(valid, window, at[:, None] - 1)
    ref = ts[at - 1][:, None]
    w = np.where(valid, weights[window] * decay_weights(ts[window], ref, half_life), 0.0)
    return Examples(
        targets=rows[at],
        hist_items=np.where(valid, rows[window], 0),
        hist_weights=w.astype(np.float32),
    )


def item_log_q(inter: Interactions, item_ids: list[str]) -> np.ndarray:
    """log of each item's share of training events (unseen items get a pseudo-count of 1)."""
    counts = np.bincount(index_of(inter.item_ids, item_ids), minlength=len(item_ids))
    counts = np.maximum(counts, 1).astype(np.float64)
    log_q: np.ndarray = np.log(counts / counts.sum())
    return log_q


def fit(
    model: TwoTower,
    examples: Examples,
    log_q: np.ndarray,
    cfg: FitConfig,
    rng: np.random.Generator,
    quiet: bool = False,
) -> list[float]:
    """AdamW over shuffled mini-batches; returns the mean loss of each epoch.

    Deterministic algorithms are on while fitting only: the backward of the history
    gather accumulates in parallel, in varying order, otherwise.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _fit(model, examples, log_q, cfg, rng, quiet)
    finally:
        torch.use_deterministic_algorithms(previous)


def _fit(
    model: TwoTower,
    examples: Examples,
    log_q: np.ndarray,
    cfg: FitConfig,
    rng: np.random.Generator,
    quiet: bool,
) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    targets = torch.from_numpy(examples.targets)
    hist_items = torch.from_numpy(examples.hist_items)
    hist_weights = torch.from_numpy(examples.hist_weights)
    log_q_t = torch.as_tensor(log_q, dtype=torch.float32)
    temperature = model.cfg.temperature
    n = len(examples)
    steps = max(1, -(-n // cfg.batch_size))
    model.train()
    losses = []
    for epoch in range(cfg.epochs):
        perm = torch.from_numpy(rng.permutation(n))
        total = 0.0
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        with Progress(steps, desc, "step", quiet=quiet, leave=False) as bar:
            for step in range(steps):
                b = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                item_vecs = model.items()
                users = model.users(item_vecs, hist_items[b], hist_weights[b])
                loss = in_batch_softmax_loss(users, item_vecs, targets[b], log_q_t, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
                bar.update()
                bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        losses.append(total / steps)
        if not quiet:
            print(f"{desc}  loss {losses[-1]:.4f}  ({bar.seconds:.1f}s)", flush=True)
    model.eval()
    return losses
