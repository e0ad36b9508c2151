"""The prequential replay: before each test event, every system recommends top-k for its
user from what happened before it; then the event is fed to every system.

The product is driven through its own code: events go through the dataflow's steps
(``dataflow.users.UserFolder``/``dataflow.trends.TrendFolder``, i.e. ``core.fold``) into an embedded
``FeatureStore`` in a temporary directory, and recommendations come from
``api.service.Recommender.recommend`` -- what ``GET /recommendations`` calls -- with
exactly what a client sends, ``recommend(user, k)``: what the user has seen is left out
by the service's own memory (``exclude_seen``), not by the harness. The service's clock
is the replay's (the time of the event about to happen), as it was live.
``tests/test_eval_rest.py`` checks that a slice of this replay through the broker and
``GET /recommendations/{user}?k=10`` gets the same hits.

Held-out items are not in the model's trained catalogue: each enters the product's
stores at its first event, before anything is recommended for that event, as a
catalogue write applied by the dataflow's ``CatalogWriter`` (``evaluation.arrivals``),
as ``POST /items`` would have it. The product's rows are the store's; the harness
compares items by id, in its own row order (``Bundle.catalogue``: trained, then held
out), which the baselines share.

The product's variants (no re-rank, MMR) are that same Recommender with other settings.
The baselines, the two-tower frozen at the cutoff among them (the same code on a store
that receives no event after it), are given each user's full seen set to leave out, the
usual protocol: a frozen store cannot know what the user picked since.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from api.service import Recommender
from core.artifacts import save_session
from core.events import ValidEvent
from core.items import ItemWrite
from core.progress import progress
from core.settings import Settings
from core.state import Trend, UserState
from dataflow.catalog import CatalogWriter
from dataflow.parsing import Accepted
from dataflow.trends import TrendFolder
from dataflow.users import UserFolder
from evaluation.arrivals import Arrivals, TextVectors
from evaluation.baselines import Als, AlsConfig, CovisitKnn, KnnConfig, Popularity
from evaluation.bundle import Bundle
from evaluation.scoring import intra_list_diversity, rank_of
from evaluation.sequential import SEEDS, SequenceBaseline
from featurestore.store import FeatureStore
from training.data import Interactions, index_of
from training.sequence import SeqConfig

K = 10
MMR_LAMBDA = 0.8
"""The diversity variant's lambda when the settings leave MMR off."""
SEQUENCE_WEIGHT = 0.2
"""The session-model variant's ``weight_sequence`` when the settings leave it off (its
best weight on the validation slice, where it did not beat leaving it off)."""


class System(Protocol):
    name: str

    def recommend(self, user: str, k: int, now: float, exclude: set[int], fresh: int) -> list[int]:
        """Top-k catalogue rows, none of ``exclude``; ``fresh`` = how many of ``exclude``
        the user picked after the cutoff (the store-backed systems may not know them)."""
        ...


Feeder = Callable[[ValidEvent, int], object]
"""Told every test event (and its catalogue row) after all systems recommended."""


def _feeder(system: SequenceBaseline) -> Feeder:
    return lambda ev, row: system.observe(ev.user_id, row, ev.ts)


class Baseline:
    """Adapts a baseline (rows in, rows out) to the replay."""

    def __init__(self, impl: Popularity | CovisitKnn | Als) -> None:
        self.impl = impl
        self.name = impl.name

    def recommend(self, user: str, k: int, now: float, exclude: set[int], fresh: int) -> list[int]:
        return self.impl.recommend(user, k, list(exclude))


REPLAY_PARTITION = -1
"""The partition the replay's events claim: no Kafka partition has this number, so a
dataflow reading a real topic later never takes its events for replays of these."""


class Features:
    """An embedded feature store fed by the dataflow's own steps, one event at a time."""

    def __init__(self, root: Path, settings: Settings, bundle: Bundle) -> None:
        self.settings = with_state_dir(settings, root)
        self.store = FeatureStore.open(self.settings)
        self.store.publish_model(
            bundle.record(),
            bundle.items,
            bundle.vectors,
            bundle.profiles,
            item_head=bundle.item_head,
        )
        self.store.activate(bundle.version)
        if bundle.session is not None:  # where the service reads it, as from training
            assert self.settings.model_dir is not None
            (self.settings.model_dir / bundle.version).mkdir(parents=True, exist_ok=True)
            save_session(self.settings.model_dir / bundle.version, bundle.session)
        self.catalogs = self.store.catalog_provider()
        self.catalogs.refresh()
        text = TextVectors(bundle.held_out, bundle.held_out_text)
        self._writer = CatalogWriter(self.store, self.catalogs, text)
        self._users = UserFolder(self.settings, self.store, self.catalogs)
        self._trends = TrendFolder(self.settings, self.store, self.catalogs)
        self._states: dict[str, UserState] = {}
        self._trend_states: dict[str, Trend] = {}
        self._offset = 0

    def feed(self, events: Iterable[ValidEvent], write_each: bool = True) -> None:
        """Fold events as the dataflow does, writing state as its sinks do (per event when
        ``write_each``, else once at the end: the same final state, faster)."""
        touched_u: dict[str, UserState] = {}
        touched_t: dict[str, Trend] = {}
        for ev in events:
            acc = Accepted(ev, REPLAY_PARTITION, self._offset, ev.ts)
            self._offset += 1
            state = self._states.get(ev.user_id) or self._users.load([acc])[0]
            self._users.fold(state, [acc])
            self._states[ev.user_id] = state
            trend = self._trend_states.get(ev.item_id) or self._trends.load([acc])[0]
            self._trends.fold(trend, [acc])
            self._trend_states[ev.item_id] = trend
            if write_each:
                self.store.write_user_states([state])
                self.store.write_trends([trend])
            else:
                touched_u[ev.user_id] = state
                touched_t[ev.item_id] = trend
        if not write_each:
            self.store.write_user_states(list(touched_u.values()))
            self.store.write_trends(list(touched_t.values()))

    def add(self, write: ItemWrite) -> None:
        """Apply a catalogue write as the dataflow does; serve it from the next request."""
        failed = self._writer.apply([(write, write.item_id)])
        if failed:
            raise ValueError(f"catalogue write refused: {failed[0][1]}")
        self.catalogs.refresh()

    def recommender(self, settings: Settings) -> Recommender:
        return Recommender(
            with_state_dir(settings, self.settings.state_dir), self.store, self.catalogs
        )

    def close(self) -> None:
        self.store.close()


def with_state_dir(settings: Settings, root: Path) -> Settings:
    return settings.with_values(
        state_dir=root,
        model_dir=None,
        qdrant={"url": None, "path": None},
        recovery={"dir": None},
    )


class ReplayClock:
    """The service's clock during a replay: the time of the event about to happen."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Served:
    """A system answered by ``Recommender.recommend`` (the API's code path), called as a
    REST client calls it: ``recommend(user, k)``, on the replay's clock. A frozen
    (batch) system is also given the harness's seen set, as the baselines are.
    ``item_ids``: the harness's rows; its answers are mapped to them by item id."""

    def __init__(
        self,
        name: str,
        recommender: Recommender,
        item_ids: Sequence[str],
        frozen: bool = False,
    ) -> None:
        self.name = name
        self.recommender = recommender
        self.item_ids = list(item_ids)
        self.rows = {i: r for r, i in enumerate(self.item_ids)}
        self.frozen = frozen
        self.clock = ReplayClock()
        recommender.clock = self.clock

    def recommend(self, user: str, k: int, now: float, exclude: set[int], fresh: int) -> list[int]:
        self.clock.now = now
        if self.frozen:
            res = self.recommender.recommend(
                user, k, exclude_items=[self.item_ids[r] for r in exclude]
            )
        else:
            res = self.recommender.recommend(user, k)
        items = res.catalog.items
        return [self.rows[items[r.row].item_id] for r in res.items]


def events_of(inter: Interactions) -> Iterator[ValidEvent]:
    for u, i, t, e in zip(
        inter.user_ids.tolist(),
        inter.item_ids.tolist(),
        inter.ts.tolist(),
        inter.event_types.tolist(),
        strict=True,
    ):
        yield ValidEvent(e, u, i, t, None)


# --- the systems of one run ---------------------------------------------------------


def variant(settings: Settings, name: str) -> Settings:
    """The product's settings with the named part switched off."""
    if name == "realtime":  # real-time decayed embedding, no re-rank: ANN order only
        return settings.with_values(
            weight_category=0.0,
            weight_recent=0.0,
            weight_popularity=0.0,
            weight_covisit=0.0,
            weight_new_item=0.0,
            weight_session=0.0,
            weight_sequence=0.0,
            mmr_lambda=1.0,
        )
    if name == "sequence":  # the session model's term on when the defaults leave it off
        on = settings.ranking.weight_sequence
        return settings.with_values(weight_sequence=0.0 if on else SEQUENCE_WEIGHT)
    if name == "mmr":
        mmr = settings.ranking.mmr_lambda
        return settings.with_values(mmr_lambda=mmr if mmr < 1 else MMR_LAMBDA)
    return settings


SYSTEMS = (
    "popularity",
    "cooc_knn",
    "als",
    "sasrec",
    "gru4rec",
    "batch_two_tower",
    "realtime_no_rerank",
    "product",
    "product_sequence",
)
SEQUENCE_MODELS = ("sasrec", "gru4rec")
"""Trained once per seed; their systems are named ``<model>_seed<N>``."""


def seeded_name(model: str, seed: int) -> str:
    return f"{model}_seed{seed}"


@dataclass(slots=True)
class Run:
    """Per-event facts and per-system ranks of one replay."""

    systems: list[str]
    ranks: dict[str, np.ndarray]
    lists: dict[str, list[list[int]]]
    diversity: dict[str, np.ndarray]
    user_cold: np.ndarray
    since_cutoff: np.ndarray
    train_events: np.ndarray
    item_cold: np.ndarray
    n_items: int
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The user's events before this one, before and after the cutoff."""
    session_position: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """1-based position of this event in the user's session (a new session after
    ``session_gap_seconds`` without events, as the fold counts sessions)."""
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def systems_for(
    train: Interactions,
    bundle: Bundle,
    settings: Settings,
    seed: int,
    names: Sequence[str] = SYSTEMS,
    knn: KnnConfig | None = None,
    mmr: bool = False,
    als: AlsConfig | None = None,
    sequence: Mapping[str, SeqConfig] | None = None,
    seeds: Sequence[int] = SEEDS,
    stores: list[Features] | None = None,
) -> Iterator[tuple[list[System], list[Feeder]]]:
    """(systems, feeders): feeders get every test event after all systems recommended.
    ``stores`` receives the product's feature stores (where held-out items arrive)."""
    item_ids = [i.item_id for i in bundle.catalogue()]
    stores = [] if stores is None else stores
    with ExitStack() as stack:
        systems: list[System] = []
        feeders: list[Feeder] = []
        pop = Popularity(train, item_ids)
        feeders.append(lambda ev, row: pop.observe(ev.user_id, row, ev.ts))
        if "popularity" in names:
            systems.append(Baseline(pop))
        if "cooc_knn" in names:
            kn = CovisitKnn(train, item_ids, pop, knn)
            systems.append(Baseline(kn))
            feeders.append(lambda ev, row: kn.observe(ev.user_id, row, ev.ts))
        if "als" in names:
            systems.append(Baseline(Als(train, item_ids, pop, seed, als)))
        for model in SEQUENCE_MODELS:
            if model in names:
                cfg = (sequence or {}).get(model) or SeqConfig(kind=model)
                for sd in seeds:
                    sq = SequenceBaseline.trained(
                        seeded_name(model, sd), train, item_ids, pop, cfg, sd
                    )
                    systems.append(sq)
                    feeders.append(_feeder(sq))
        store_systems = [
            n
            for n in names
            if n in ("batch_two_tower", "realtime_no_rerank", "product", "product_sequence")
        ]
        if store_systems:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recsys-eval-")))
            events = list(events_of(train))
            if "batch_two_tower" in names:
                frozen = Features(tmp / "frozen", settings, bundle)
                stack.callback(frozen.close)
                stores.append(frozen)  # new items arrive; no event after the cutoff does
                frozen.feed(events, write_each=False)
                systems.append(
                    Served("batch_two_tower", frozen.recommender(settings), item_ids, frozen=True)
                )
            if {"realtime_no_rerank", "product", "product_sequence"} & set(names):
                live = Features(tmp / "live", settings, bundle)
                stack.callback(live.close)
                stores.append(live)
                live.feed(events, write_each=False)
                feeders.append(lambda ev, row: live.feed([ev]))
                if "realtime_no_rerank" in names:
                    systems.append(
                        Served(
                            "realtime_no_rerank",
                            live.recommender(variant(settings, "realtime")),
                            item_ids,
                        )
                    )
                if "product" in names:
                    systems.append(Served("product", live.recommender(settings), item_ids))
                if "product_sequence" in names:
                    on = settings.ranking.weight_sequence > 0
                    systems.append(
                        Served(
                            "product_no_sequence" if on else "product_sequence",
                            live.recommender(variant(settings, "sequence")),
                            item_ids,
                        )
                    )
                if mmr:
                    systems.append(
                        Served("product_mmr", live.recommender(variant(settings, "mmr")), item_ids)
                    )
        yield systems, feeders


def replay(
    train: Interactions,
    test: Interactions,
    bundle: Bundle,
    settings: Settings,
    seed: int,
    names: Sequence[str] = SYSTEMS,
    cold_items: frozenset[str] = frozenset(),
    knn: KnnConfig | None = None,
    mmr: bool = False,
    als: AlsConfig | None = None,
    k: int = K,
    quiet: bool = False,
    desc: str = "replay",
    sequence: Mapping[str, SeqConfig] | None = None,
    seeds: Sequence[int] = SEEDS,
) -> Run:
    catalogue = bundle.catalogue()
    item_ids = [i.item_id for i in catalogue]
    cats = [set(i.categories) for i in catalogue]
    train_rows = index_of(train.item_ids, item_ids)
    test_rows = index_of(test.item_ids, item_ids)
    if (test_rows < 0).any():
        raise ValueError("test events reference items outside the catalogue")
    seen: dict[str, set[int]] = {}
    for u, r in zip(train.user_ids.tolist(), train_rows.tolist(), strict=True):
        if r >= 0:
            seen.setdefault(u, set()).add(r)
    train_count = {u: len(s) for u, s in seen.items()}
    fresh: dict[str, int] = {}
    events = dict(zip(*np.unique(train.user_ids, return_counts=True), strict=True))
    last_ts: dict[str, float] = {}
    for u, t in zip(train.user_ids.tolist(), train.ts.tolist(), strict=True):
        last_ts[u] = t
    session: dict[str, int] = {}
    gap = settings.fold.session_gap_seconds

    n = len(test)
    stores: list[Features] = []
    arrivals = Arrivals(bundle.held_out)
    built = systems_for(
        train, bundle, settings, seed, names, knn, mmr, als, sequence, seeds, stores
    )
    with built as (systems, feeders):
        sys_names = [s.name for s in systems]
        ranks = {s: np.zeros(n, dtype=np.int64) for s in sys_names}
        lists: dict[str, list[list[int]]] = {s: [] for s in sys_names}
        div = {s: np.zeros(n) for s in sys_names}
        user_cold = np.zeros(n, dtype=bool)
        since = np.zeros(n, dtype=np.int64)
        activity = np.zeros(n, dtype=np.int64)
        item_cold = np.zeros(n, dtype=bool)
        history = np.zeros(n, dtype=np.int64)
        position = np.zeros(n, dtype=np.int64)
        for s in systems:
            if isinstance(s, SequenceBaseline):
                s.prepare(test.user_ids.tolist(), test_rows.tolist(), test.ts.tolist(), k)
        for e, (ev, row) in enumerate(
            progress(
                zip(events_of(test), test_rows.tolist(), strict=True),
                total=n,
                desc=desc,
                unit="ev",
                quiet=quiet,
                mininterval=1.0,
            )
        ):
            u = ev.user_id
            user_cold[e] = u not in train_count
            since[e] = fresh.get(u, 0)
            activity[e] = train_count.get(u, 0)
            item_cold[e] = ev.item_id in cold_items
            history[e] = events.get(u, 0) + fresh.get(u, 0)
            same = u in last_ts and ev.ts - last_ts[u] <= gap
            session[u] = session.get(u, 0) + 1 if same else 1
            position[e] = session[u]
            last_ts[u] = ev.ts
            write = arrivals.due(ev.item_id)
            if write is not None:
                for store in stores:
                    store.add(write)
            exclude = seen.get(u, set())
            for s in systems:
                top = s.recommend(u, k, ev.ts, exclude, fresh.get(u, 0))
                ranks[s.name][e] = rank_of(top, row, k)
                lists[s.name].append(top)
                div[s.name][e] = intra_list_diversity([cats[r] for r in top])
            for f in feeders:
                f(ev, row)
            seen.setdefault(u, set()).add(row)
            fresh[u] = fresh.get(u, 0) + 1
    return Run(
        sys_names,
        ranks,
        lists,
        div,
        user_cold,
        since,
        activity,
        item_cold,
        len(item_ids),
        history,
        position,
    )
