"""The real-time user fold: pure maths, no Kafka, no store.

State is kept *as of* ``last_ts``, the latest event time folded so far:

    u(T) = sum_i w(type_i) * 2^(-(T - t_i) / half_life) * v(item_i)

An event newer than T first decays the state forward to its time; an older (late)
event is added with the weight it would have had at T. Both branches compute the same
sum, so the result does not depend on arrival order: late events cannot corrupt state,
and a replay in any order converges to the same vector. The clock is event time, never
the wall clock, so replays and back-tests reproduce what happened live.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.events import ValidEvent
from core.settings import Settings
from core.state import RecentItem, UserState

# Affinities that decayed below this share of one event are dropped to bound state size.
_PRUNE = 1e-4


def decay_factor(dt: float, half_life: float) -> float:
    """2^(-dt/half_life): the weight left after ``dt`` seconds."""
    factor: float = 2.0 ** (-dt / half_life)
    return factor


def decayed_add(
    value: float, ref_ts: float, weight: float, ts: float, half_life: float
) -> tuple[float, float]:
    """The fold's rule for one decayed scalar kept as of ``ref_ts``: add ``weight`` seen at
    ``ts`` and return (value, new ref_ts). Same sum whatever the arrival order."""
    if ts >= ref_ts:
        return value * decay_factor(ts - ref_ts, half_life) + weight, ts
    return value + weight * decay_factor(ref_ts - ts, half_life), ref_ts


def decay_weights(ts: np.ndarray, ref_ts: float | np.ndarray, half_life: float) -> np.ndarray:
    """Vectorised ``decay_factor(ref_ts - ts)``; training pools histories with it."""
    weights: np.ndarray = np.exp2(-(np.asarray(ref_ts) - ts) / half_life)
    return weights


@dataclass(frozen=True, slots=True)
class FoldParams:
    half_life: float
    weights: Mapping[str, float]
    recent_items: int
    session_gap: float
    seen_cap: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FoldParams:
        return cls(
            half_life=settings.fold.half_life_seconds,
            weights=dict(settings.fold.event_weights),
            recent_items=settings.fold.recent_items,
            session_gap=settings.fold.session_gap_seconds,
            seen_cap=settings.fold.seen_cap,
        )


def fold_event(
    state: UserState,
    event: ValidEvent,
    item_vector: np.ndarray | None,
    item_categories: Sequence[str],
    params: FoldParams,
    *,
    row: int | None,
) -> UserState:
    """Apply one validated event to ``state`` (in place, for speed) and return it.

    ``row``: the item's row in the catalogue of ``state.model_version`` (None: not in
    it), remembered among the items the user has seen."""
    w = params.weights[event.event_type]
    t = event.ts
    session = (state.session_id, state.session_start, state.session_events)
    if t >= state.last_ts:
        if state.last_ts > -math.inf and t > state.last_ts:
            d = decay_factor(t - state.last_ts, params.half_life)
            if state.vector is not None:
                state.vector *= d
            state.mass *= d
            _decay_categories(state.categories, d)
        session = _next_session(
            session, state.user_id, event, t - state.last_ts, params.session_gap
        )
        state.last_ts = t
        w_eff = w
    else:
        # Late event: weigh it as it would weigh now, never move the clock back.
        w_eff = w * decay_factor(state.last_ts - t, params.half_life)
        session = _late_in_session(session, event)
    state.session_id, state.session_start, state.session_events = session

    if item_vector is None:
        state.unknown_items += 1
    else:
        if state.vector is None:
            state.vector = np.zeros_like(item_vector, dtype=np.float32)
        state.vector += np.float32(w_eff) * item_vector
        state.mass += w_eff
    for c in item_categories:
        state.categories[c] = state.categories.get(c, 0.0) + w_eff

    _remember(state.recent, RecentItem(event.item_id, t, event.event_type), params.recent_items)
    if row is not None and params.seen_cap:
        _remember_row(state, row, params.seen_cap)
    state.event_count += 1
    return state


def fold_events(
    state: UserState,
    events: Sequence[ValidEvent],
    item_vectors: Sequence[np.ndarray | None],
    item_categories: Sequence[Sequence[str]],
    rows: Sequence[int | None],
    params: FoldParams,
) -> UserState:
    """Apply one user's events (in partition order) to ``state`` at once: the state
    ``fold_event`` reaches one event at a time, up to float rounding, whatever the batch
    boundaries. All or nothing: if it raises, ``state`` is unchanged.

    The decayed vector sum does not depend on order (module docstring), so each event
    adds ``w * 2^(-(T - t) / half_life)`` of its item as of ``T``, the batch's latest
    time: one matrix product for the batch instead of two vector updates per event.
    Categories are decayed when an event touches them and once at ``T`` for the rest
    (``_CategoryFold``), not all of them at every event. Sessions follow the events one by
    one; recent items and seen rows are appended at once when the events are in time
    order."""
    if len(events) == 1:
        return fold_event(
            state, events[0], item_vectors[0], item_categories[0], params, row=rows[0]
        )
    half_life = params.half_life
    weights = params.weights
    gap = params.session_gap
    user_id = state.user_id
    start = state.last_ts
    end = max(start, max(e.ts for e in events))
    session = (state.session_id, state.session_start, state.session_events)
    coeffs: list[float] = []
    known: list[np.ndarray] = []
    cats = _CategoryFold(state.categories, start, half_life)
    in_order = True
    unknown = 0
    last = start
    for event, vector, categories in zip(events, item_vectors, item_categories, strict=True):
        t = event.ts
        w = weights[event.event_type]
        if t >= last:
            session = _next_session(session, user_id, event, t - last, gap)
            last = t
            w_now = w
        else:
            in_order = False
            session = _late_in_session(session, event)
            w_now = w * decay_factor(last - t, half_life)
        if vector is None:
            unknown += 1
        else:
            coeffs.append(w * 2.0 ** (-(end - t) / half_life))
            known.append(vector)
        if categories:
            cats.add(categories, w_now, last)
    add = None
    if known:
        add = np.asarray(coeffs, dtype=np.float32) @ np.asarray(known, dtype=np.float32)
    categories_at_end = cats.at(end)
    recent = _recent_after(state.recent, events, params.recent_items, in_order)

    # nothing below can fail on the events' account: commit
    if start > -math.inf and end > start:
        d = decay_factor(end - start, half_life)
        if state.vector is not None:
            state.vector *= d
        state.mass *= d
    state.last_ts = end
    if add is not None:
        if state.vector is None:
            state.vector = add
        else:
            state.vector += add
        state.mass += math.fsum(coeffs)
    state.categories = categories_at_end
    state.session_id, state.session_start, state.session_events = session
    state.recent = recent
    if params.seen_cap:
        _remember_rows(state, rows, params.seen_cap)
    state.unknown_items += unknown
    state.event_count += len(events)
    return state


Session = tuple[str | None, float, int]
"""(session id, start, events so far)."""


def _next_session(
    session: Session, user_id: str, event: ValidEvent, gap: float, session_gap: float
) -> Session:
    """The session after ``event``, ``gap`` seconds after the user's latest event: the
    event's own session id, else a new session after ``session_gap`` idle seconds."""
    sid, start, count = session
    if event.session_id is not None:
        new = event.session_id != sid
        new_sid: str | None = event.session_id
    else:
        new = sid is None or gap > session_gap
        new_sid = f"{user_id}@{int(event.ts)}" if new else sid
    if new:
        return new_sid, event.ts, 1
    return sid, start, count + 1


def _late_in_session(session: Session, event: ValidEvent) -> Session:
    """The session after a late event: counted in it if it belongs to it."""
    sid, start, count = session
    if event.session_id == sid or (event.session_id is None and event.ts >= start):
        return sid, min(start, event.ts), count + 1
    return session


def _decay_categories(cats: dict[str, float], d: float) -> None:
    for c in list(cats):
        v = cats[c] * d
        if v < _PRUNE:
            del cats[c]
        else:
            cats[c] = v


def _remember(recent: list[RecentItem], item: RecentItem, cap: int) -> None:
    if not recent or item.ts >= recent[-1].ts:
        recent.append(item)
    else:
        bisect.insort(recent, item, key=lambda r: r.ts)
    if len(recent) > cap:
        del recent[: len(recent) - cap]


class _CategoryFold:
    """A user's category affinities through a batch, as ``fold_event`` leaves them one
    event at a time: at each event later than the last, every affinity decays to its time
    and the ones below ``_PRUNE`` are dropped (then the event's categories are added).
    An affinity only decreases between two events that touch it, so it was dropped
    somewhere in between iff it is below ``_PRUNE`` when next touched (or at the batch's
    end), provided the clock moved since: each is decayed then, the untouched ones once
    at the end."""

    __slots__ = ("_before", "_half_life", "_start", "_touched")

    def __init__(self, before: dict[str, float], start: float, half_life: float) -> None:
        self._before = before
        self._start = start
        self._half_life = half_life
        self._touched: dict[str, tuple[float, float]] = {}
        """category -> (affinity as of a time, that time)"""

    def add(self, categories: Sequence[str], weight: float, now: float) -> None:
        """Add ``weight`` (as of ``now``, the latest event time so far) to each category."""
        touched = self._touched
        for c in categories:
            got = touched.get(c)
            value, ref = (self._before.get(c, 0.0), self._start) if got is None else got
            if value and now > ref:
                value *= 2.0 ** (-(now - ref) / self._half_life)  # decay_factor, inlined
                if value < _PRUNE:
                    value = 0.0
            touched[c] = (value + weight, now)

    def at(self, end: float) -> dict[str, float]:
        """The affinities once the batch's latest event, at ``end``, is folded."""
        decayed = self._start > -math.inf and end > self._start
        if not decayed and not self._touched:
            return self._before
        d = decay_factor(end - self._start, self._half_life) if decayed else 1.0
        out = {}
        for c, value in self._before.items():
            if c not in self._touched and (not decayed or (value := value * d) >= _PRUNE):
                out[c] = value
        for c, (value, ref) in self._touched.items():
            if end > ref:
                value *= decay_factor(end - ref, self._half_life)
                if value < _PRUNE:
                    continue
            out[c] = value
        return out


def _recent_after(
    recent: list[RecentItem], events: Sequence[ValidEvent], cap: int, in_order: bool
) -> list[RecentItem]:
    """The recent items ``_remember`` leaves after ``events``, one at a time. Events in
    time order (none before the latest folded, so none before the latest kept) are all
    appended: only the newest ``cap`` of them can stay."""
    if in_order:
        kept = [RecentItem(e.item_id, e.ts, e.event_type) for e in events[-cap:]]
        return (recent + kept)[-cap:]
    out = list(recent)
    for e in events:
        _remember(out, RecentItem(e.item_id, e.ts, e.event_type), cap)
    return out


def _remember_rows(state: UserState, rows: Sequence[int | None], cap: int) -> None:
    """``_remember_row`` for each row in order (None: not in the catalogue), appended at
    once while the list stays under the compaction's threshold."""
    seen = state.seen_rows
    prev = seen[-1] if seen else None
    new: list[int] = []
    for row in rows:
        if row is not None and row != prev:
            new.append(row)
            prev = row
    if len(seen) + len(new) <= cap + cap // 4:
        seen.extend(new)
        return
    for row in new:
        _remember_row(state, row, cap)


def _remember_row(state: UserState, row: int, cap: int) -> None:
    """Append ``row`` to the rows the user has seen (unless it is the last one already).

    Looking for an earlier copy on every event would cost a scan per event (~2 us with
    numpy); instead, once the list outgrows ``cap`` by a quarter, ``compact_rows`` keeps
    the newest ``cap`` distinct rows, each where it was last seen. So the state holds at
    most 1.25 x ``cap`` rows and always the ``cap`` most recent distinct ones; the
    compaction (~0.2 ms at 5,000) comes once per ``cap / 4`` events at most."""
    seen = state.seen_rows
    if seen and seen[-1] == row:
        return
    seen.append(row)
    if len(seen) > cap + cap // 4:
        state.seen_rows = compact_rows(seen, cap)


def compact_rows(rows: array[int], cap: int) -> array[int]:
    """The last ``cap`` distinct values of ``rows``, each at its last position, in order."""
    a = np.frombuffer(rows, np.int32)
    _, last_from_end = np.unique(a[::-1], return_index=True)
    keep = np.sort(len(a) - 1 - last_from_end)[-cap:]
    out = array("i")
    out.frombytes(a[keep].tobytes())
    return out


def remap_rows(rows: array[int], old_to_new: np.ndarray | None) -> array[int]:
    """``rows`` of an old catalogue as rows of a new one, order kept, through
    ``old_to_new`` (``core.catalog.row_map``); items the new one lacks (or all of them, when the old
    catalogue is unknown: None) are dropped, they cannot be recommended."""
    out = array("i")
    if old_to_new is None or not rows:
        return out
    old = np.frombuffer(rows, np.int32)
    new = old_to_new[old[old < len(old_to_new)]]
    out.frombytes(new[new >= 0].astype(np.int32).tobytes())
    return out


def rebuild_vector(
    state: UserState,
    lookup: Callable[[str], np.ndarray | None],
    params: FoldParams,
    model_version: str,
    seen_map: np.ndarray | None,
) -> UserState:
    """Move a user into a new model's item space from the recent items kept in state,
    and their seen rows into its catalogue through ``seen_map`` (``core.catalog.RowMaps``:
    from the catalogue of ``state.model_version``; None when that one is unknown).

    Older history beyond ``recent_items`` has decayed to a negligible weight for any
    sensible half-life; what it contributed is dropped rather than mixed across spaces.
    """
    vec: np.ndarray | None = None
    mass = 0.0
    for r in state.recent:
        v = lookup(r.item_id)
        if v is None:
            continue
        w = params.weights.get(r.event_type, 0.0) * decay_factor(
            state.last_ts - r.ts, params.half_life
        )
        vec = (np.zeros_like(v, dtype=np.float32) if vec is None else vec) + np.float32(w) * v
        mass += w
    state.vector = vec
    state.mass = mass
    if state.seen_rows:
        state.seen_rows = remap_rows(state.seen_rows, seen_map)
    state.model_version = model_version
    return state


def mass_at(state: UserState, now: float, half_life: float) -> float:
    """The real-time evidence left at ``now``: decides how much the query trusts it."""
    if state.mass <= 0.0:
        return 0.0
    return state.mass * decay_factor(max(0.0, now - state.last_ts), half_life)
