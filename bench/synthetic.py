"""Synthetic events and a matching model, with structure planted so results can be checked.

    recsys bench synthetic --users 20000 --items 2000 --events 200000 --out events.jsonl
    recsys bench synthetic --users 20000 --items 2000 --events 200000 --kafka
    recsys bench synthetic ... --publish-model synthetic-1   # also publish the model

The world: M items ``i<k>`` in C categories ``c<j>``, each item's vector a unit vector
near its category's centroid; U users ``u<k>``, each with a long-term taste (a few
preferred categories with weights). A user's events come in sessions; each session has
an intent category drawn from the taste, different from the previous session's, and
most of its events hit items of that category (popular ones more often). Events are
mostly views, then clicks, add-to-carts and purchases; each user's timestamps increase,
with short gaps inside a session and gaps longer than the 30-minute session timeout
between sessions. The stream is ordered by event time, JSON exactly as producers send
it (``dataflow/events.py``), keyed by user. The same ``--seed`` gives the same bytes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import numpy as np
import typer
from confluent_kafka import KafkaError, KafkaException, Message

from core.events import ValidEvent
from core.fold import FoldParams, fold_event
from core.progress import Progress
from core.records import ItemRecord, ModelRecord, Profile, UserHead, iso
from core.settings import Settings
from core.state import UserState
from eventlog.admin import ensure_app_topics
from eventlog.producer import bulk_config, bulk_producer
from featurestore.store import FeatureStore

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
EVENT_TYPE_P: tuple[float, ...] = (0.80, 0.12, 0.05, 0.03)
P_INTENT = 0.85
"""Share of a session's events on its intent category; the rest mostly other tastes."""
P_TASTE = 0.10
"""Share on one of the user's other preferred categories; what is left is uniform."""
DEFAULT_START = "2024-11-01T00:00:00Z"
SESSION_TIMEOUT = 1800.0
"""Matches the product's default session gap, so every planted session is seen as one."""


@dataclass(frozen=True, slots=True)
class WorldConfig:
    users: int = 20_000
    items: int = 2_000
    categories: int = 20
    dim: int = 64
    """The trained two-tower's dimension."""
    tastes: int = 3
    """Preferred categories per user."""
    seed: int = 0
    noise: float = 0.6
    """Spread of item vectors around their centroid (0: every item is its centroid)."""
    session_events: float = 8.0
    """Mean events per session."""
    in_session_gap: float = 40.0
    """Mean seconds between two events of a session."""
    between_sessions: float = 4 * 3600.0
    """Mean extra seconds between sessions, on top of the session timeout."""
    start_spread: float = 86_400.0
    """Users' first events are spread uniformly over this many seconds."""


@dataclass(slots=True)
class Events:
    """A stream of events as arrays (cheap to make, count and check), in event-time order."""

    user: np.ndarray
    """User index (id ``u<k>``), int64."""
    item: np.ndarray
    """Item index (id ``i<k>``), int64."""
    kind: np.ndarray
    """Index into EVENT_TYPES, int8."""
    ts: np.ndarray
    """Unix seconds, millisecond resolution, float64."""
    session: np.ndarray
    """Global session number (id ``s<n>``), int64."""
    intent: np.ndarray
    """The session's planted intent category, int64 (ground truth, not sent)."""

    def __len__(self) -> int:
        return len(self.user)

    def per_user(self, users: int) -> np.ndarray:
        """Events per user index: what each user's ``event_count`` must reach."""
        return np.bincount(self.user, minlength=users)

    def records(self, chunk: int = 65_536) -> Iterator[tuple[bytes, bytes]]:
        """(key, JSON value) per event: key = user id, as the product produces them."""
        for lo in range(0, len(self), chunk):
            hi = min(lo + chunk, len(self))
            stamps = _rfc3339_ms(self.ts[lo:hi])
            for u, i, k, t, s in zip(
                self.user[lo:hi].tolist(),
                self.item[lo:hi].tolist(),
                self.kind[lo:hi].tolist(),
                stamps,
                self.session[lo:hi].tolist(),
                strict=True,
            ):
                yield (
                    f"u{u}".encode(),
                    f'{{"event_type":"{EVENT_TYPES[k]}","user_id":"u{u}","item_id":"i{i}",'
                    f'"timestamp":"{t}","session_id":"s{s}"}}'.encode(),
                )

    def valid_events(self) -> Iterator[ValidEvent]:
        """The same events as the dataflow sees them after parsing."""
        for u, i, k, t, s in zip(
            self.user.tolist(),
            self.item.tolist(),
            self.kind.tolist(),
            self.ts.tolist(),
            self.session.tolist(),
            strict=True,
        ):
            yield ValidEvent(EVENT_TYPES[k], f"u{u}", f"i{i}", t, f"s{s}")


def _rfc3339_ms(ts: np.ndarray) -> list[str]:
    ms = np.round(ts * 1000.0).astype(np.int64).astype("datetime64[ms]")
    return [s + "Z" for s in np.datetime_as_string(ms, unit="ms").tolist()]


def parse_time(text: str) -> float:
    """RFC 3339 (``Z`` allowed) or Unix seconds."""
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _unit(rows: np.ndarray) -> np.ndarray:
    unit: np.ndarray = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    return unit


class World:
    """Items, categories and user tastes: the ground truth events are drawn from."""

    def __init__(self, cfg: WorldConfig) -> None:
        if cfg.items < cfg.categories or cfg.tastes > cfg.categories:
            raise ValueError("need items >= categories >= tastes")
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 1])
        c, m, d = cfg.categories, cfg.items, cfg.dim
        self.centroids = _unit(rng.normal(size=(c, d))).astype(np.float32)
        self.item_category = rng.permutation(np.arange(m) % c)
        noise = rng.normal(size=(m, d)) * (cfg.noise / math.sqrt(d))
        self.item_vectors = _unit(self.centroids[self.item_category] + noise).astype(np.float32)
        # Items of each category, most popular first: event draws favour low ranks.
        order = np.argsort(self.item_category, kind="stable")
        self._cat_items = order
        self._cat_size = np.bincount(self.item_category, minlength=c)
        self._cat_start = np.concatenate([[0], np.cumsum(self._cat_size)[:-1]])
        rank = np.empty(m, dtype=np.int64)
        rank[order] = np.arange(m) - self._cat_start[self.item_category[order]]
        n = self._cat_size[self.item_category]
        # P(rank r) under r = floor(n * U^2), for a popularity prior in [0, 1].
        share = np.sqrt((rank + 1) / n) - np.sqrt(rank / n)
        self.popularity = np.log1p(share / share.min()) / np.log1p(share.max() / share.min())

        u, k = cfg.users, cfg.tastes
        self.taste = np.empty((u, k), dtype=np.int64)
        for lo in range(0, u, 100_000):  # k categories without replacement, per user
            hi = min(lo + 100_000, u)
            self.taste[lo:hi] = np.argsort(rng.random((hi - lo, c)), axis=1)[:, :k]
        self.taste_weight = np.sort(rng.dirichlet(np.full(k, 1.5), size=u), axis=1)[:, ::-1]
        self.activity = rng.lognormal(0.0, 1.0, size=u)

    def category_name(self, j: int) -> str:
        return f"c{j}"

    def events(
        self,
        n: int,
        start: float | str = DEFAULT_START,
        end: float | None = None,
        seed: int | None = None,
        users: int | None = None,
        first_user: int = 0,
    ) -> Events:
        """``n`` events of users ``first_user .. first_user+users-1`` (default: all).

        Every user gets at least one event when ``n`` allows. ``end`` shifts the whole
        stream so its last event is at ``end`` (a "live" stream ending now); otherwise
        it starts at ``start``.
        """
        cfg = self.cfg
        users = cfg.users - first_user if users is None else users
        if n <= 0 or users <= 0:
            raise ValueError("need n > 0 events and at least one user")
        rng = np.random.default_rng([cfg.seed if seed is None else seed, 2])
        pop = np.arange(first_user, first_user + users)
        p = self.activity[pop] / self.activity[pop].sum()
        base = 1 if n >= users else 0
        counts = base + rng.multinomial(n - base * users, p)
        pop, counts = pop[counts > 0], counts[counts > 0]
        user = np.repeat(pop, counts)
        starts = np.cumsum(counts) - counts
        pos = np.arange(n) - np.repeat(starts, counts)

        new_session = (pos == 0) | (rng.random(n) < 1.0 / cfg.session_events)
        gap = np.where(
            new_session,
            SESSION_TIMEOUT + 60.0 + rng.exponential(cfg.between_sessions, n),
            1.0 + rng.exponential(cfg.in_session_gap, n),
        )
        first = pos == 0
        gap[first] = rng.random(int(first.sum())) * cfg.start_spread
        csum = np.cumsum(gap)
        ts = csum - np.repeat(csum[starts] - gap[starts], counts)  # per-user cumulative sum

        session = np.cumsum(new_session) - 1
        s_user = user[new_session]
        slot = self._session_slots(rng, s_user)
        intent = self.taste[s_user, slot]

        ev_intent = intent[session]
        r = rng.random(n)
        other = self.taste[user, rng.integers(0, cfg.tastes, n)]
        uniform = rng.integers(0, cfg.categories, n)
        cat = np.where(r < P_INTENT, ev_intent, np.where(r < P_INTENT + P_TASTE, other, uniform))
        rank = np.floor(self._cat_size[cat] * rng.random(n) ** 2).astype(np.int64)
        item = self._cat_items[self._cat_start[cat] + rank]
        kind = rng.choice(len(EVENT_TYPES), size=n, p=EVENT_TYPE_P).astype(np.int8)

        ts = ts + (parse_time(start) if isinstance(start, str) else float(start))
        if end is not None:
            ts += end - ts.max()
        ts = np.round(ts, 3)
        order = np.argsort(ts, kind="stable")
        return Events(
            user[order], item[order], kind[order], ts[order], session[order], ev_intent[order]
        )

    def _session_slots(self, rng: np.random.Generator, s_user: np.ndarray) -> np.ndarray:
        """Taste slot per session, by taste weight, never the same as the user's last one."""
        cum = np.cumsum(self.taste_weight[s_user], axis=1)
        above = rng.random(len(s_user))[:, None] > cum
        drawn: np.ndarray = np.minimum(above.sum(axis=1), self.cfg.tastes - 1)
        if self.cfg.tastes == 1:
            return drawn
        slots = drawn.tolist()
        users = s_user.tolist()
        k = self.cfg.tastes
        for j in range(1, len(slots)):
            if users[j] == users[j - 1] and slots[j] == slots[j - 1]:
                slots[j] = (slots[j] + 1) % k
        return np.asarray(slots, dtype=np.int64)

    # --- the matching model -------------------------------------------------

    def item_records(self) -> list[ItemRecord]:
        return [
            ItemRecord(
                f"i{k}",
                f"Item {k} ({self.category_name(c)})",
                [self.category_name(c)],
                round(float(p), 4),
                {"synthetic": True},
            )
            for k, (c, p) in enumerate(
                zip(self.item_category.tolist(), self.popularity.tolist(), strict=True)
            )
        ]

    def head(self, hidden: int = 16) -> UserHead:
        """A small residual perturbation: live vectors stay near the item space."""
        rng = np.random.default_rng([self.cfg.seed, 3])
        d = self.cfg.dim
        return UserHead(
            (rng.normal(size=(d, hidden)) * 0.05).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.normal(size=(hidden, d)) * 0.05).astype(np.float32),
            np.zeros(d, np.float32),
        )

    def profiles(self) -> list[Profile]:
        """Long-term vectors: each user's taste-weighted mix of category centroids."""
        mix = np.einsum("uk,ukd->ud", self.taste_weight, self.centroids[self.taste])
        mix = _unit(mix).astype(np.float32)
        return [Profile(f"u{u}", mix[u], []) for u in range(self.cfg.users)]

    def model(
        self, version: str, with_profiles: bool = True
    ) -> tuple[ModelRecord, list[ItemRecord], np.ndarray, list[Profile]]:
        record = ModelRecord(
            version,
            self.cfg.dim,
            iso(parse_time(DEFAULT_START)) or "",
            self.head(),
            {"synthetic": True, "categories": self.cfg.categories, "seed": self.cfg.seed},
        )
        return (
            record,
            self.item_records(),
            self.item_vectors,
            (self.profiles() if with_profiles else []),
        )

    def publish(
        self,
        store: FeatureStore,
        version: str = "synthetic-1",
        with_profiles: bool = True,
        activate: bool = True,
    ) -> ModelRecord:
        """Publish (and activate) the matching model to a ``FeatureStore``."""
        record, items, vectors, profiles = self.model(version, with_profiles)
        store.publish_model(record, items, vectors, profiles)
        if activate:
            store.activate(version)
        return record

    def fold(self, events: Events, settings: Settings, version: str) -> list[UserState]:
        """Each user's real-time state after ``events``, as the dataflow would fold it."""
        params = FoldParams.from_settings(settings)
        vectors = self.item_vectors
        cats = [[self.category_name(c)] for c in self.item_category.tolist()]
        states: dict[str, UserState] = {}
        for ev, item in zip(events.valid_events(), events.item.tolist(), strict=True):
            state = states.get(ev.user_id)
            if state is None:
                state = states[ev.user_id] = UserState(ev.user_id, model_version=version)
            fold_event(state, ev, vectors[item], cats[item], params, row=item)
        return list(states.values())


# --- output ---------------------------------------------------------------------


def producer_config(bootstrap: str, **extra: object) -> dict[str, object]:
    """The product's producer settings (murmur2) tuned for bulk throughput."""
    return bulk_config(bootstrap, **extra)


def produce(
    records: Iterator[tuple[bytes, bytes]],
    bootstrap: str,
    topic: str,
    total: int | None = None,
    progress: bool = True,
) -> int:
    """Produce keyed records with confluent-kafka; returns how many the broker acked.

    Raises if any delivery failed: a benchmark on a partial topic would lie.
    """
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None and len(failed) < 10:
            failed.append(str(err))

    producer = bulk_producer(bootstrap, on_delivery=on_delivery)
    bar = Progress(
        total,
        f"produce {topic}",
        "msg",
        quiet=not progress or (total is not None and total < 50_000),
        leave=False,
    )
    n = 0
    try:
        produce_one = producer.produce
        for key, value in records:
            while True:
                try:
                    produce_one(topic, value, key)
                    break
                except BufferError:  # local queue full: let the broker catch up
                    producer.poll(0.005)
            n += 1
            if n % 8192 == 0:
                producer.poll(0)
                bar.update(8192)
        bar.update(n % 8192)
        left = producer.flush(60)
    finally:
        bar.close()
    if left or failed:
        raise KafkaException(f"{left} messages not delivered; errors: {failed}")
    return n


def write_jsonl(records: Iterator[tuple[bytes, bytes]], path: Path) -> int:
    n = 0
    with open(path, "wb") as f:
        for _, value in records:
            f.write(value + b"\n")
            n += 1
    return n


app = typer.Typer(add_completion=False, rich_markup_mode="markdown")


@app.command(
    help=__doc__,
    epilog="Example: recsys bench synthetic --events 200000 --out events.jsonl",
)
def cli(
    users: Annotated[int, typer.Option(min=1, help="Users in the world.")] = 20_000,
    items: Annotated[int, typer.Option(min=1, help="Items in the catalogue.")] = 2_000,
    events: Annotated[int, typer.Option(min=0, help="Events to generate.")] = 200_000,
    categories: Annotated[int, typer.Option(min=1, help="Item categories.")] = 20,
    dim: Annotated[int, typer.Option(min=1, help="The model's vector dimension.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the world and its events.")] = 0,
    start: Annotated[str, typer.Option(help="First event time (RFC 3339 or Unix s).")] = (
        DEFAULT_START
    ),
    end_now: Annotated[
        bool,
        typer.Option(
            "--end-now", help="Shift the stream so its last event is now (live-looking state)."
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write JSON lines here.")] = None,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Produce to RECSYS_KAFKA_EVENTS_TOPIC at RECSYS_KAFKA_BOOTSTRAP_SERVERS.",
        ),
    ] = False,
    publish_model: Annotated[
        str | None,
        typer.Option(
            metavar="VERSION",
            help="Publish and activate the matching model (e.g. synthetic-1) in the "
            "configured store.",
        ),
    ] = None,
) -> None:
    if out is not None and kafka:
        raise typer.BadParameter("--out and --kafka exclude each other")
    if not (out or kafka or publish_model):
        raise typer.BadParameter("say where to: --out FILE, --kafka and/or --publish-model")
    raise typer.Exit(main(SimpleNamespace(**locals())))


def main(args: Any, log: Callable[[str], None] = print) -> int:
    """Generate (and publish) as ``args`` (the fields of ``cli``'s options) says."""

    world = World(
        WorldConfig(
            users=args.users,
            items=args.items,
            categories=args.categories,
            dim=args.dim,
            seed=args.seed,
        )
    )
    settings = Settings()
    if args.publish_model:
        store = FeatureStore.open(settings)
        try:
            world.publish(store, args.publish_model)
        finally:
            store.close()
        log(
            f"published and activated model {args.publish_model} "
            f"({args.items} items, {args.users} profiles, dim {args.dim})"
        )
    if not (args.out or args.kafka):
        return 0
    t0 = time.perf_counter()
    events = world.events(args.events, start=args.start, end=time.time() if args.end_now else None)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.out:
        n = write_jsonl(events.records(), args.out)
        where = str(args.out)
    else:
        ensure_app_topics(settings)
        n = produce(
            events.records(),
            settings.kafka.bootstrap_servers,
            settings.kafka.events_topic,
            total=len(events),
        )
        where = f"{settings.kafka.bootstrap_servers}/{settings.kafka.events_topic}"
    dt = time.perf_counter() - t0
    log(
        json.dumps(
            {
                "events": n,
                "users": int((events.per_user(args.users) > 0).sum()),
                "to": where,
                "generate_s": round(gen_s, 3),
                "write_s": round(dt, 3),
                "per_s": round(n / dt) if dt > 0 else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    app(prog_name="python -m bench.synthetic")
