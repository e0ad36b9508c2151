"""Recommendation maths: the query vector, re-ranking and reasons. Pure numpy, no I/O.

Retrieval asks Qdrant for a few hundred candidates near the query vector; re-ranking
then scores each candidate on what the user did in the last minutes:

    score = w_ann * ann + w_category * category + w_recent * recent + w_popularity * popularity

    ann         dot(query, item): both unit vectors, so a cosine in [-1, 1]
    category    share of the user's decayed activity in the item's categories, in [0, 1]
    recent      max over the last items j of 2^(-age_j / h) * g^(n-1-j) * cos(item, item_j):
                the newest item counts most, by time (h) and by position (g)
    popularity  max(catalogue popularity, trending now), in [0, 1]
    covisit     sum over the last items j of fade_j * S[j, item], S the co-visitation published
                with the model ("users who just picked j pick this next"), fade_j by age and
                position; divided by the best candidate's sum, so in [0, 1]
    new         1 for an item with no training events (catalogue popularity 0), else 0:
                held-out and brand-new items have neither popularity nor co-visitation,
                so without it they are buried below equally close known items
    session     dot(item, head(sum_j g^(n-1-j) * v_j)) over the user's recent items j: the
                user tower applied to the session pooled by position, not time, so the
                session still counts after a pause that has faded the real-time query
    sequence    the learned session model (``core.session``) over the recent items and their
                time gaps: p(item next) / p(best candidate next), in (0, 1]; items with no
                training events, which the model never saw, get the candidates' median

Reasons: an item names one or two terms, never one that did not lift it. A term is
eligible when it adds at least ``REASON_MIN_CONTRIBUTION`` to the score and more than it
adds to the median candidate (every candidate is close to the query, say: that lifts
none of them above the others). Among those, the term where the item stands out most
against the shortlist (the re-ranked items the list is cut from) leads, so neighbouring
items with different breakdowns give different reasons; a second term is named only if
it stands out there too. The recent pick a reason names is the one that pulls that item
most (see ``session_scores``), and "trending now" needs the item to be trending at all,
which the fold grants only after ``fold.trending_min_users`` distinct users.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from core.catalog import Catalog
from core.fold import mass_at
from core.records import Profile, normalize
from core.session import SessionModel
from core.settings import RankingSettings
from core.state import UserState

RECENT_ITEMS_COMPARED = 5
MAX_REASONS = 2
# A term must add at least this much to the score to be named as a reason.
REASON_MIN_CONTRIBUTION = 0.03
MEDIAN_SORT_BELOW = 64
"""``median_rows`` sorts rows up to this long (a shortlist) and partitions longer ones
(the candidates): the faster of the two at each length, same values."""

# Terms whose reason says the item is similar to one of the user's picks.
_SIMILAR_TO_A_PICK = frozenset({"recent", "session"})

_VERBS = {
    "view": "viewed",
    "click": "clicked on",
    "add_to_cart": "added",
    "purchase": "bought",
    "rating": "rated",
}


@dataclass(frozen=True, slots=True)
class RankParams:
    """The per-request ranking parameters. Their defaults and meaning live in
    ``core.settings.RankingSettings`` under the same names; build them with
    ``from_settings`` (A/B variants override them by name, ``core.variants``)."""

    weight_ann: float
    weight_category: float
    weight_recent: float
    weight_popularity: float
    recent_similarity_half_life_seconds: float
    recent_position_decay: float
    weight_covisit: float
    covisit_items: int
    covisit_half_life_seconds: float
    covisit_position_decay: float
    weight_new_item: float
    weight_session: float
    session_position_decay: float
    weight_sequence: float

    @classmethod
    def from_settings(cls, ranking: RankingSettings, **overrides: float) -> RankParams:
        values = {f.name: getattr(ranking, f.name) for f in fields(cls)}
        return cls(**(values | overrides))


@dataclass(slots=True)
class Query:
    vector: np.ndarray | None
    """Unit vector in the model's user space, or None for a cold user."""
    realtime_weight: float
    """Share of the query coming from the real-time state (the rest: long-term profile)."""


@dataclass(slots=True)
class Ranked:
    row: int
    score: float
    terms: dict[str, float]
    reasons: list[str] = field(default_factory=list)


def build_query(
    state: UserState | None,
    profile: Profile | None,
    catalog: Catalog,
    now: float,
    half_life: float,
    blend_mass: float,
    min_realtime_mass: float,
) -> Query:
    """Blend the real-time vector with the long-term profile, trusting the real-time
    side more the more (recent) evidence it holds: alpha = m / (m + blend_mass).

    A real-time vector that is zero, not finite, or holds less than
    ``min_realtime_mass`` of decayed event weight as of the user's last event counts as
    absent (``has_realtime_vector``)."""
    realtime = None
    mass = 0.0
    if (
        state is not None
        and state.vector is not None
        and has_realtime_vector(state, min_realtime_mass)
    ):
        realtime = catalog.head.apply(state.vector)
        mass = mass_at(state, now, half_life)
    longterm = profile.vector if profile is not None else None
    if realtime is None and longterm is None:
        return Query(None, 0.0)
    if longterm is None:
        return Query(realtime, 1.0)
    if realtime is None:
        return Query(normalize(longterm), 0.0)
    alpha = mass / (mass + blend_mass)
    return Query(normalize(alpha * realtime + (1.0 - alpha) * normalize(longterm)), alpha)


def has_realtime_vector(state: UserState | None, min_realtime_mass: float) -> bool:
    """Whether ``state`` holds a real-time vector worth querying with: present, with a
    decayed mass of at least ``min_realtime_mass``, finite and not zero. A vector whose
    items were followed by a long silence decays towards zero (float32 underflows to
    exactly 0 after ~150 half-lives), and an event on an unknown item then stores it
    with a vanishing mass: such a vector points nowhere and must not personalise."""
    if state is None or state.vector is None:
        return False
    mass = state.mass
    if not (mass >= min_realtime_mass and mass > 0.0 and math.isfinite(mass)):
        return False
    norm2 = float(np.dot(state.vector, state.vector))  # inf or nan if any value is not finite
    return 0.0 < norm2 < math.inf


Picks = Callable[[list[int]], list[int | None]]
"""For the candidates at the given positions, the recent item (index into
``state.recent``) behind a term's value: computed for the shortlist only, the only
items a reason is written for."""


def _no_picks(at: list[int]) -> list[int | None]:
    return [None] * len(at)


def _listed(src: Sequence[int | None]) -> Picks:
    return lambda at: [src[i] for i in at]


def rerank(
    candidates: Sequence[tuple[int, float]],
    catalog: Catalog,
    state: UserState | None,
    trending: Mapping[int, float],
    params: RankParams,
    now: float,
    realtime_weight: float,
    k: int,
    sequence_model: SessionModel | None = None,
) -> list[Ranked]:
    """Score candidates (catalogue row, ann score) and return the best ``k``, explained.
    ``sequence_model``: the model version's learned session model, if it has one."""
    if not candidates:
        return []
    row_list, ann_list = zip(*candidates, strict=True)
    rows = np.array(row_list, dtype=np.int64)
    ann = np.array(ann_list, dtype=np.float32)
    return rerank_rows(
        rows, ann, catalog, state, trending, params, now, realtime_weight, k, sequence_model
    )


def rerank_rows(
    rows: np.ndarray,
    ann: np.ndarray,
    catalog: Catalog,
    state: UserState | None,
    trending: Mapping[int, float],
    params: RankParams,
    now: float,
    realtime_weight: float,
    k: int,
    sequence_model: SessionModel | None = None,
) -> list[Ranked]:
    """``rerank`` of candidates given as arrays: ``rows`` (int64 catalogue rows) and
    ``ann`` (float32 ANN scores), as the request path holds them."""
    if not len(rows):
        return []
    names, stacked, computed, picks, trend = _contributions(
        rows, ann, catalog, state, trending, params, now, sequence_model
    )
    total = sum(list(stacked))  # term by term, in the listed order
    top = (-total).argsort(kind="stable")[:k]
    # What lifted an item above a typical candidate, and where it stands out among the
    # shortlist it competes with for the list (one median per term over each set; a
    # term not computed is 0 for every candidate, and so is its median).
    typical = np.zeros(len(names), dtype=np.float32)
    typical[computed] = median_rows(stacked[computed])
    shortlist = stacked[:, top]
    values = shortlist.T.astype(np.float64)  # the differences in Python's float precision
    lifts = values - typical
    standouts = values - median_rows(shortlist)
    eligible = (values >= REASON_MIN_CONTRIBUTION) & (lifts > 0)
    at = top.tolist()
    sources = {name: fn(at) for name, fn in picks.items()}
    top_rows = rows[top].tolist()
    top_total = total[top].tolist()
    top_trend = trend[top].tolist()
    out = []
    for j, (term_values, lift, standout, ok) in enumerate(
        zip(values.tolist(), lifts.tolist(), standouts.tolist(), eligible.tolist(), strict=True)
    ):
        row = top_rows[j]
        r = Ranked(row, top_total[j], dict(zip(names, term_values, strict=True)))
        r.reasons = _reasons(
            names,
            [t for t, yes in enumerate(ok) if yes],
            (lift, standout),
            (sources, j),
            row,
            catalog,
            state,
            top_trend[j],
            now,
            realtime_weight,
        )
        out.append(r)
    return out


def _term_names(params: RankParams, sequence_model: SessionModel | None) -> list[str]:
    """The re-rank's terms, in the order the score adds them and the breakdown lists them."""
    names = ["ann", "category", "recent", "popularity"]
    names += [
        name
        for name, on in (
            ("covisit", params.weight_covisit),
            ("new", params.weight_new_item),
            ("session", params.weight_session),
            ("sequence", params.weight_sequence and sequence_model is not None),
        )
        if on
    ]
    return names


def _contributions(
    rows: np.ndarray,
    ann: np.ndarray,
    catalog: Catalog,
    state: UserState | None,
    trending: Mapping[int, float],
    params: RankParams,
    now: float,
    sequence_model: SessionModel | None,
) -> tuple[list[str], np.ndarray, list[int], dict[str, Picks], np.ndarray]:
    """The terms' names and their weighted contributions, (terms, candidates) float32;
    the rows of the terms computed (the others are 0 for every candidate: a term turned
    off by a weight of 0, co-visitation without lists or recent items, "new" among no
    new items); the picks behind the terms that name one; the trending scores."""
    names = _term_names(params, sequence_model)
    out = np.zeros((len(names), len(rows)), dtype=np.float32)
    term = {name: out[i] for i, name in enumerate(names)}
    zero: set[str] = set()
    vecs = catalog.vectors.take(rows, axis=0)  # (the method: no wrapper, same rows)
    popularity = catalog.popularity[rows]
    trend = _lookup(trending, rows)
    picks: dict[str, Picks] = {}
    has_recent = state is not None and bool(state.recent)
    np.multiply(params.weight_ann, ann, out=term["ann"])
    if _off(params.weight_category):
        zero.add("category")
    else:
        category = _category_scores(rows, catalog, state)
        np.multiply(params.weight_category, category, out=term["category"])
    if _off(params.weight_recent):
        zero.add("recent")
    else:
        recent, recent_src = _recent_similarity(vecs, catalog, state, now, params)
        np.multiply(params.weight_recent, recent, out=term["recent"])
        picks["recent"] = _listed(recent_src)
    np.multiply(params.weight_popularity, np.maximum(popularity, trend), out=term["popularity"])
    if "covisit" in term:
        if params.weight_covisit > 0 and not (has_recent and catalog.covisit):
            zero.add("covisit")  # covisit_scores would give zeros
        else:
            covisit, covisit_src = covisit_scores(rows, catalog, state, now, params)
            np.multiply(params.weight_covisit, covisit, out=term["covisit"])
            picks["covisit"] = _listed(covisit_src)
    if "new" in term:
        new = popularity <= 0
        if params.weight_new_item > 0 and not new.any():
            zero.add("new")
        else:
            np.multiply(params.weight_new_item, new, out=term["new"])
    if "session" in term:
        session, picks["session"] = session_scores(vecs, catalog, state, params)
        np.multiply(params.weight_session, session, out=term["session"])
    if "sequence" in term:
        assert sequence_model is not None  # _term_names lists it only with one
        sequence, sequence_src = sequence_scores(rows, catalog, state, sequence_model, now)
        np.multiply(params.weight_sequence, sequence, out=term["sequence"])
        picks["sequence"] = _listed(sequence_src)
    computed = [i for i, name in enumerate(names) if name not in zero]
    return names, out, computed, picks, trend


def _off(weight: float) -> bool:
    """A weight of +0 turns a term off: its contributions are all +0 (as ``0 * value``
    for the term's values, which are never negative), so it is not computed."""
    return weight == 0.0 and math.copysign(1.0, weight) > 0


def median_rows(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)`` for a 2-d array without NaNs, with the same values (the
    middle element or the mean of the middle two) in a fraction of its time: one
    partition at the middle, the element before it being the largest of the smaller
    half (a request takes three medians, on up to (20, 300) arrays)."""
    n = a.shape[1]
    h = n // 2
    if n <= MEDIAN_SORT_BELOW:  # a short row: sorting it is cheaper than partitioning
        ordered = np.sort(a, axis=1)
        return ordered[:, h] if n % 2 else (ordered[:, h - 1] + ordered[:, h]) / 2
    part: np.ndarray = np.array(a, order="C")  # a copy in row order (a may be a transpose)
    part.partition(h, axis=1)  # the middle element in place, the smaller ones before it
    if n % 2:
        return part[:, h]
    mean: np.ndarray = (part[:, :h].max(axis=1) + part[:, h]) / 2
    return mean


def _category_scores(rows: np.ndarray, catalog: Catalog, state: UserState | None) -> np.ndarray:
    if state is None or not state.categories:
        return np.zeros(len(rows), dtype=np.float32)
    total = sum(state.categories.values())
    share = np.zeros(len(catalog.category_names), dtype=np.float32)
    column = catalog.category_column
    for c, w in state.categories.items():
        if (j := column.get(c)) is not None:
            share[j] = w / total
    scores: np.ndarray = np.minimum(1.0, catalog.category_matrix[rows] @ share)
    return scores


def _recent_similarity(
    vecs: np.ndarray, catalog: Catalog, state: UserState | None, now: float, params: RankParams
) -> tuple[np.ndarray, list[int | None]]:
    """Per candidate: the best recency-weighted cosine to a recent item, and which one."""
    n = len(vecs)
    if state is None or not state.recent:
        return np.zeros(n, dtype=np.float32), [None] * n
    recent = [
        (j, r)
        for j, r in enumerate(state.recent[-RECENT_ITEMS_COMPARED:])
        if r.item_id in catalog.index
    ]
    if not recent:
        return np.zeros(n, dtype=np.float32), [None] * n
    rvecs = np.stack([catalog.vectors[catalog.index[r.item_id]] for _, r in recent])
    newest = len(state.recent[-RECENT_ITEMS_COMPARED:]) - 1
    fade = np.array(
        [
            2.0 ** (-max(0.0, now - r.ts) / params.recent_similarity_half_life_seconds)
            * params.recent_position_decay ** (newest - j)
            for j, r in recent
        ],
        np.float32,
    )
    sims = np.clip(vecs @ rvecs.T, 0.0, None) * fade  # (n, recent)
    best = sims.argmax(axis=1)
    offset = len(state.recent) - min(len(state.recent), RECENT_ITEMS_COMPARED)
    src: list[int | None] = (offset + np.array([j for j, _ in recent])[best]).tolist()
    return sims[np.arange(n), best], src


def _lookup(scores: Mapping[int, float], rows: np.ndarray) -> np.ndarray:
    """``scores.get(row, 0)`` for every row, vectorised (a Python loop over 300
    candidates cost ~100 us a request)."""
    out = np.zeros(len(rows), dtype=np.float32)
    if not scores:
        return out
    keys = np.fromiter(scores.keys(), np.int64, len(scores))
    vals = np.fromiter(scores.values(), np.float32, len(scores))
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    at = np.minimum(np.searchsorted(keys, rows), len(keys) - 1)
    hit = keys[at] == rows
    out[hit] = vals[at[hit]]
    return out


def session_scores(
    vecs: np.ndarray, catalog: Catalog, state: UserState | None, params: RankParams
) -> tuple[np.ndarray, Picks]:
    """Per candidate: cosine to the user head applied to the recent items pooled with
    weights g^(n-1-j) (position only); and, for the reason, the recent item (index into
    ``state.recent``) that pulls it most: weight x (its cosine to the pick + how much
    closer it is to the pick than the median candidate), so a pick every candidate is
    close to does not get named for all of them."""
    n = len(vecs)
    if state is None or not state.recent:
        return np.zeros(n, dtype=np.float32), _no_picks
    known: list[int] = []  # the picks the catalogue holds: index in state.recent
    known_rows: list[int] = []
    for j, r in enumerate(state.recent):
        if (row := catalog.index.get(r.item_id)) is not None:
            known.append(j)
            known_rows.append(row)
    if not known:
        return np.zeros(n, dtype=np.float32), _no_picks
    rvecs = catalog.vectors.take(known_rows, axis=0)
    w = params.session_position_decay ** np.arange(len(known) - 1, -1, -1, dtype=np.float32)
    user = catalog.head.apply((w[:, None] * rvecs).sum(axis=0))
    values = (vecs @ user).astype(np.float32, copy=False)
    if len(known) == 1:
        return values, lambda at: [known[0]] * len(at)  # the one pick pulls every item
    cos = vecs @ rvecs.T  # (n, recent)
    median = median_rows(cos.T)

    def picks(at: list[int]) -> list[int | None]:
        pull = (2.0 * cos[at] - median) * w
        return [known[i] for i in pull.argmax(axis=1).tolist()]

    return values, picks


def sequence_scores(
    rows: np.ndarray,
    catalog: Catalog,
    state: UserState | None,
    model: SessionModel,
    now: float,
) -> tuple[np.ndarray, list[int | None]]:
    """Per candidate: the session model's p(next = item) over that of the likeliest
    candidate, in (0, 1]; and the recent item (index into ``state.recent``) that pulls it
    most (attention of the newest position x similarity in the model's item table), for
    the reason. Items with no training events get the candidates' median: the model never
    saw them, so it neither lifts nor buries them. Rows beyond the model's item table
    (items written at run time) are such items, and are not read as recent items."""
    n = len(rows)
    if state is None or not state.recent:
        return np.zeros(n, dtype=np.float32), [None] * n
    table = model.item_emb.shape[0]
    known = [j for j, r in enumerate(state.recent) if catalog.index.get(r.item_id, table) < table]
    known = known[-model.max_len :]
    if not known:
        return np.zeros(n, dtype=np.float32), [None] * n
    recent_rows = np.fromiter(
        (catalog.index[state.recent[j].item_id] for j in known), np.int64, len(known)
    )
    ts = np.fromiter((state.recent[j].ts for j in known), np.float64, len(known))
    h, attn = model.encode(recent_rows, ts, now)
    inside = rows < table
    emb = model.item_emb[np.where(inside, rows, 0)]
    logits = emb @ h + model.item_bias[np.where(inside, rows, 0)]
    value = np.exp(logits - logits.max()).astype(np.float32)
    unseen = (catalog.popularity[rows] <= 0) | ~inside
    if unseen.any() and not unseen.all():
        value[unseen] = np.median(value[~unseen])
    used = recent_rows[-len(attn) :]  # the items the model read (its last max_len)
    pull = emb @ (model.item_emb[used] * attn[:, None]).T
    offset = len(known) - len(attn)
    src: list[int | None] = np.asarray(known[offset:])[pull.argmax(axis=1)].tolist()
    for i in np.flatnonzero(~inside).tolist():
        src[i] = None  # the model has no row for it to compare
    return value, src


def _fades(state: UserState, now: float, params: RankParams) -> list[tuple[int, float]]:
    """(index in state.recent, fade) of the newest ``covisit_items`` recent items, faded
    by age (``covisit_half_life``) and by position (``covisit_position_decay``)."""
    lo = max(0, len(state.recent) - params.covisit_items)
    newest = len(state.recent) - 1
    return [
        (
            j,
            2.0 ** (-max(0.0, now - r.ts) / params.covisit_half_life_seconds)
            * params.covisit_position_decay ** (newest - j),
        )
        for j, r in enumerate(state.recent[lo:], start=lo)
    ]


def covisit_scores(
    rows: np.ndarray, catalog: Catalog, state: UserState | None, now: float, params: RankParams
) -> tuple[np.ndarray, list[int | None]]:
    """Per candidate row: sum over recent items j of fade_j * S[j, row], divided by the
    best candidate's sum (so the term is in [0, 1] however long the history is, and its
    weight means the same for every user); and the j that contributed most (index into
    ``state.recent``), for the reason."""
    n = len(rows)
    score = np.zeros(n, dtype=np.float32)
    src: list[int | None] = [None] * n
    if state is None or not state.recent or not catalog.covisit:
        return score, src
    pos = {int(r): i for i, r in enumerate(rows)}
    best = np.zeros(n, dtype=np.float32)
    for j, fade in _fades(state, now, params):
        row = catalog.index.get(state.recent[j].item_id)
        nbrs = catalog.covisit.get(row) if row is not None else None
        if nbrs is None or fade <= 0:
            continue
        for r, w in zip(nbrs[0].tolist(), nbrs[1].tolist(), strict=True):
            i = pos.get(r)
            if i is not None:
                c = fade * w
                score[i] += c
                if c > best[i]:
                    best[i], src[i] = c, j
    top = float(score.max())
    return (score / top if top > 0 else score), src


def covisit_neighbours(
    catalog: Catalog, state: UserState | None, now: float, params: RankParams, exclude: set[int]
) -> list[int]:
    """Rows co-visited with the user's recent items, best first: extra candidates, so an
    item users pick right after X is ranked even when the ANN did not return it."""
    if state is None or not state.recent or not catalog.covisit:
        return []
    score: dict[int, float] = {}
    for j, fade in _fades(state, now, params):
        row = catalog.index.get(state.recent[j].item_id)
        nbrs = catalog.covisit.get(row) if row is not None else None
        if nbrs is None:
            continue
        for r, w in zip(nbrs[0].tolist(), nbrs[1].tolist(), strict=True):
            if r not in exclude:
                score[r] = score.get(r, 0.0) + fade * w
    return sorted(score, key=lambda r: (-score[r], r))


def _reasons(
    names: list[str],
    eligible: list[int],
    lifts: tuple[list[float], list[float]],
    sources: tuple[Mapping[str, list[int | None]], int],
    row: int,
    catalog: Catalog,
    state: UserState | None,
    trend: float,
    now: float,
    realtime_weight: float,
) -> list[str]:
    """The item's one or two strongest reasons (module docstring). ``eligible``: the
    positions in ``names`` of the terms that add at least ``REASON_MIN_CONTRIBUTION``
    and lift the item over the median candidate; ``lifts``: each term's value over the
    median candidate's and over the shortlist's median, by position; ``sources``: the
    picks behind the terms that name one, for the shortlist, and the item's place in it."""
    lift, standout = lifts
    picks, at = sources
    order = sorted(eligible, key=lambda t: (-standout[t], -lift[t])) if eligible[1:] else eligible
    if order and standout[order[0]] <= 0:
        # Typical of the shortlist on every term: name what lifted it most.
        order = [max(order, key=lambda t: lift[t])]
    chosen: list[str] = []
    alike: set[int | None] = set()  # picks already named for being similar to the item
    for t in order:
        if len(chosen) == MAX_REASONS or (chosen and standout[t] <= 0):
            break
        name = names[t]
        src = picks[name][at] if name in picks else None
        if name in _SIMILAR_TO_A_PICK and src in alike:
            continue  # "because you viewed X" and "in line with X" say the same thing
        text = _reason_text(name, row, catalog, state, src, trend, now, realtime_weight)
        if text is not None and text not in chosen:
            chosen.append(text)
            if name in _SIMILAR_TO_A_PICK:
                alike.add(src)
    if not chosen:
        return ["popular with everyone" if state is None else "matches your taste"]
    return chosen


def _reason_text(
    name: str,
    row: int,
    catalog: Catalog,
    state: UserState | None,
    src: int | None,
    trend: float,
    now: float,
    realtime_weight: float,
) -> str | None:
    """How term ``name`` reads for the item at ``row``; ``src``: the index in
    ``state.recent`` of the pick behind it, for the terms that name one."""
    if name in ("recent", "covisit", "session", "sequence"):
        if state is None or src is None:
            return None
        r = state.recent[src]
        title = catalog.title(r.item_id)
        if name == "sequence":
            return f"likely next after your recent picks, like {title}"
        if name == "session" and len(state.recent) > 1:
            return f"in line with your recent picks, like {title}"
        verb = _VERBS.get(r.event_type, "interacted with")
        when = ago(now - r.ts)
        if name == "recent":
            return f"because you {verb} {title} {when}"
        if name == "covisit":
            return f"often picked with {title}, which you {verb} {when}"
        return f"in line with {title}, which you {verb} {when}"
    if name == "category":
        return _category_reason(row, catalog, state) if state is not None else None
    if name == "ann":
        if realtime_weight >= 0.5:
            return "close to what you are exploring right now"
        return "matches your long-term taste"
    if name == "new":
        return "new: nobody had picked it when the model was trained"
    if name == "popularity":
        # ``trend`` is non-zero only for items the fold counts as trending (enough
        # distinct users); one user's events never make an item "trending now".
        trending = trend > 0 and trend >= catalog.popularity[row]
        return "trending now" if trending else "popular with everyone"
    return None


def _category_reason(row: int, catalog: Catalog, state: UserState) -> str:
    total = sum(state.categories.values()) or 1.0
    cats = catalog.items[row].categories
    best = max(cats, key=lambda c: state.categories.get(c, 0.0))
    pct = round(100 * state.categories.get(best, 0.0) / total)
    return f"you have been into {best} lately ({pct}% of your recent activity)"


def cold_candidates(
    catalog: Catalog, trending: Mapping[int, float], exclude: set[int], limit: int
) -> list[tuple[int, float]]:
    """For users with nothing to go on: trending now, then all-time popular."""
    score = catalog.popularity.copy()
    for row, t in trending.items():
        score[row] = max(score[row], t)
    order = np.argsort(-score, kind="stable")
    out = []
    for r in order:
        if int(r) not in exclude:
            out.append((int(r), 0.0))
            if len(out) >= limit:
                break
    return out


def ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size:
            n = math.floor(s / size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def diversify(ranked: Sequence[Ranked], catalog: Catalog, lam: float, k: int) -> list[Ranked]:
    """Maximal marginal relevance: pick greedily by lam * score - (1 - lam) * the highest
    cosine to an item already picked (scores min-max scaled over the pool). lam = 1 keeps
    the re-ranked order; lower values trade accuracy for less redundant lists."""
    if lam >= 1.0 or len(ranked) <= 1:
        return list(ranked[:k])
    scores = np.array([r.score for r in ranked], dtype=np.float32)
    span = float(scores.max() - scores.min()) or 1.0
    rel = (scores - scores.min()) / span
    vecs = catalog.vectors[[r.row for r in ranked]]
    sims = vecs @ vecs.T
    chosen: list[int] = []
    redundancy = np.full(len(ranked), -np.inf, dtype=np.float32)
    left = np.ones(len(ranked), dtype=bool)
    while len(chosen) < min(k, len(ranked)):
        value = lam * rel - (1.0 - lam) * np.maximum(redundancy, 0.0)
        value[~left] = -np.inf
        i = int(np.argmax(value))
        chosen.append(i)
        left[i] = False
        redundancy = np.maximum(redundancy, sims[i])
    return [ranked[i] for i in chosen]
