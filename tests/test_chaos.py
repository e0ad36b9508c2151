"""Chaos with a verifier, as Kafka Streams' exactly-once system test and Flink's checker do.

A producer streams events straight into Kafka, each user's carrying a sequence number,
with poison messages mixed in. Meanwhile the serving process (``python -m infra.serve``:
API + in-process dataflow on the embedded store) is killed with SIGKILL several times
mid-stream and started again, and the dev broker is restarted once under the running
service. The dev broker keeps its log in memory, so its restart loses what it held: the
stream is paused and drained (every event folded, every poison message dead-lettered)
before it, which a durable cluster would not need. At the end every user's stored state
must reflect each valid event exactly once: ``event_count`` equals the events sent, and
the recent items are exactly the last ones sent (a lost event leaves a gap, a duplicate
shows twice). Prints one line:

    chaos: users=N events=N lost=N duplicated=N dead-lettered=N
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from core.settings import Settings
from core.state import UserState
from eventlog.admin import topic_id
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from infra.broker import DevBroker, free_port
from infra.process import ServeProcess
from tests.helpers import isolated_settings, publish

pytestmark = pytest.mark.integration

USERS = 40
ITEMS = 40
RATE = 150.0
"""Messages per second the producer sends."""
POISON_EVERY = 37
T0 = 1_700_000_000.0
KINDS = ("view", "view", "view", "click", "add_to_cart", "purchase")


def poison(n: int, rng: random.Random) -> bytes:
    """A message the dataflow cannot fold, of one of several kinds."""
    now = time.time()
    bodies: list[bytes] = [
        b'{"event_type": "view", "user_id": "poison-%d", ' % n,  # truncated JSON
        json.dumps({"event_type": "explode", "user_id": f"poison-{n}", "item_id": "i1"}).encode(),
        json.dumps({"event_type": "view", "item_id": "i1"}).encode(),  # no user
        json.dumps({"event_type": "view", "user_id": n, "item_id": "i1"}).encode(),
        b"",
        b"\xff\xfe not utf-8 \x00",
        json.dumps(
            {"event_type": "view", "user_id": "p", "item_id": "i1", "x": "y" * 20_000}
        ).encode(),
        json.dumps(
            {"event_type": "view", "user_id": "p", "item_id": "i1", "timestamp": now + 86_400}
        ).encode(),
        b"[1, 2, 3]",
    ]
    return bodies[n % len(bodies)]


class Stream:
    """Produces the events (and the poison) in a thread at ``RATE`` and remembers what the
    broker acknowledged: each user's events as (item, timestamp), with a sequence number
    per user, and the keys of the poison messages."""

    def __init__(self, settings: Settings, seed: int) -> None:
        self._settings = settings
        self._rng = random.Random(seed)
        self._k = 0
        self._seq: Counter[str] = Counter()
        self.sent: dict[str, list[tuple[str, float]]] = {}
        self.poison: set[str] = set()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Stream:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending; returns once every message sent was acknowledged."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)
        assert not self._thread.is_alive() and not self.failed, self.failed

    def _run(self) -> None:
        p = Producer(
            {
                "bootstrap.servers": self._settings.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                **PRODUCER_CONFIG,
            }
        )
        start, sent = time.perf_counter(), 0
        while not self._stop.is_set():
            delay = start + sent / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key, value, record = self._next()
            p.produce(
                self._settings.kafka.events_topic,
                value,
                key,
                on_delivery=lambda err, _m, r=record: self._delivered(err, r),
            )
            p.poll(0)
            sent += 1
        left = p.flush(30)
        if left:
            self.failed.append(f"{left} message(s) not acknowledged")

    def _next(self) -> tuple[bytes, bytes, tuple[str, str, float] | str]:
        self._k += 1
        k = self._k
        if k % POISON_EVERY == 0:
            key = f"poison-{k}"
            return key.encode(), poison(k, self._rng), key
        user = f"c{self._rng.randrange(USERS)}"
        seq = self._seq[user]
        self._seq[user] += 1
        ts = T0 + k * 0.5  # exact in binary: the stored timestamps compare equal
        item = f"i{self._rng.randrange(ITEMS)}" if k % 11 else f"new-{user}-{seq}"
        body = {"event_type": self._rng.choice(KINDS), "user_id": user, "item_id": item}
        body |= {"timestamp": ts, "seq": seq}  # seq: an extra field, ignored by the flow
        return user.encode(), json.dumps(body).encode(), (user, item, ts)

    def _delivered(self, err: KafkaError | None, record: tuple[str, str, float] | str) -> None:
        if err is not None:
            self.failed.append(str(err))
        elif isinstance(record, str):
            self.poison.add(record)
        else:
            user, item, ts = record
            self.sent.setdefault(user, []).append((item, ts))


class DeadLetters:
    """Reads the dead-letter topic from its start; ``keys``: distinct keys seen (a dead
    letter may be written twice after a crash: the dead-letter sink is at-least-once)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.keys: set[str] = set()
        self.copies = 0
        self._consumer: Consumer | None = None

    def reopen(self) -> None:
        """After a broker restart: the topic is a new one, read it from its start."""
        if self._consumer is not None:
            self._consumer.close()
        s = self._settings.kafka
        self._consumer = Consumer(
            {"bootstrap.servers": s.bootstrap_servers, "group.id": "chaos", "log_level": 0}
        )
        self._consumer.assign(
            [TopicPartition(s.dead_letter_topic, p, 0) for p in range(s.topic_partitions)]
        )

    def read_until(self, keys: set[str], timeout: float) -> None:
        if self._consumer is None:
            self.reopen()
        assert self._consumer is not None
        deadline = time.monotonic() + timeout
        while not keys <= self.keys and time.monotonic() < deadline:
            for m in self._consumer.consume(500, 0.2):
                self._take(m)

    def _take(self, m: Message) -> None:
        if m.error() is None and m.key() is not None:
            self.copies += 1
            self.keys.add(m.key().decode())

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


def service(settings: Settings, log: Path, port: int) -> ServeProcess:
    env = {
        "RECSYS_STATE_DIR": str(settings.state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECSYS_KAFKA_EVENTS_TOPIC": settings.kafka.events_topic,
        "RECSYS_KAFKA_DEAD_LETTER_TOPIC": settings.kafka.dead_letter_topic,
        "RECSYS_KAFKA_TOPIC_PARTITIONS": str(settings.kafka.topic_partitions),
        "RECSYS_RECOVERY_EPOCH_SECONDS": "0.3",
        "RECSYS_API_IMPRESSIONS_ENABLED": "false",
        "RECSYS_API_ACCESS_LOG": "off",
    }
    return ServeProcess(env, log, port=port, ready_timeout=90)


def counts(url: str, users: list[str]) -> dict[str, int]:
    out = {}
    with httpx.Client(base_url=url, timeout=10) as api:
        for u in users:
            r = api.get(f"/users/{u}")
            out[u] = r.json()["event_count"] if r.status_code == 200 else 0
    return out


def drain(url: str, stream: Stream, dead: DeadLetters, timeout: float = 60) -> None:
    """Until every event sent is folded and every poison message dead-lettered (or the time
    is up: the verifier then reports what is missing)."""
    deadline = time.monotonic() + timeout
    want = {u: len(evs) for u, evs in stream.sent.items()}
    while time.monotonic() < deadline:
        got = counts(url, list(want))
        if all(got[u] >= n for u, n in want.items()):
            break
        time.sleep(0.5)
    dead.read_until(stream.poison, max(1.0, deadline - time.monotonic()))


def verify(states: dict[str, UserState], stream: Stream) -> tuple[int, int]:
    """(lost, duplicated) over all users, from each user's event count and recent items.

    Every event sent has its own timestamp, so in the recent items (the newest ones
    folded, oldest first) an event shown twice is a duplicate and an event sent within
    their time range but absent is lost, whatever the counts say."""
    lost = duplicated = 0
    for user, events in stream.sent.items():
        state = states.get(user)
        count = state.event_count if state else 0
        shown = Counter((r.item_id, r.ts) for r in state.recent) if state else Counter()
        sent = set(events)
        oldest = min((ts for _, ts in shown), default=float("inf"))
        gaps = sum(1 for e in sent if e[1] >= oldest and e not in shown)
        twice = sum(n - 1 for n in shown.values()) + sum(1 for e in shown if e not in sent)
        lost += max(len(events) - count, gaps, 0 if shown or not events else len(events))
        duplicated += max(count - len(events), twice)
    return lost, duplicated


def test_chaos_every_valid_event_is_folded_exactly_once(tmp_path):
    port = free_port()
    broker = DevBroker(port, log_path=tmp_path / "broker.log").start()
    settings = isolated_settings(tmp_path / "var", broker.bootstrap)
    store = FeatureStore.open(settings)
    publish(store, n=ITEMS, dim=8)
    store.close()
    api_port = free_port()
    rng = random.Random(12)
    stream = Stream(settings, seed=3)
    dead = DeadLetters(settings)
    logs = iter(tmp_path / f"serve-{i}.log" for i in range(20))
    svc: ServeProcess | None = None
    try:
        stream.start()
        for _ in range(3):  # kill -9 mid-stream, three times
            svc = service(settings, next(logs), api_port).start()
            svc.wait_ready()
            time.sleep(rng.uniform(0.5, 2.0))
            svc.stop(signal.SIGKILL)
        stream.stop()
        svc = service(settings, next(logs), api_port)
        svc.start().wait_ready()
        drain(svc.url, stream, dead)  # the in-memory broker is about to lose its log
        poison_before = set(stream.poison)

        old_id = topic_id(settings.kafka.bootstrap_servers, settings.kafka.events_topic)
        broker.stop()
        broker.start()  # same port, empty; the running service picks it up by itself
        back = time.monotonic()
        while topic_id(settings.kafka.bootstrap_servers, settings.kafka.events_topic) in (
            None,
            old_id,
        ):
            assert time.monotonic() - back < 10, "the service did not recreate its topics"
            time.sleep(0.2)
        svc.wait_ready(timeout=10)
        dead.reopen()

        stream.start()
        time.sleep(rng.uniform(1.0, 2.0))
        svc.stop(signal.SIGKILL)  # and once more on the new topic
        svc = service(settings, next(logs), api_port)
        svc.start().wait_ready()
        time.sleep(1.0)
        stream.stop()
        drain(svc.url, stream, dead)
        assert svc.stop(signal.SIGTERM) == 0, svc.log_text()[-3000:]
    finally:
        if svc is not None:
            svc.stop(signal.SIGKILL)
        dead.close()
        broker.stop()

    store = FeatureStore.open(settings)
    try:
        states = store.read_user_states(list(stream.sent))
    finally:
        store.close()
    lost, duplicated = verify(states, stream)
    events = sum(len(e) for e in stream.sent.values())
    dead_lettered = len(dead.keys & stream.poison)
    print(
        f"chaos: users={len(stream.sent)} events={events} lost={lost} "
        f"duplicated={duplicated} dead-lettered={dead_lettered}"
    )
    assert poison_before and poison_before <= dead.keys  # read before the broker lost them
    assert events > 1000 and len(stream.sent) == USERS
    assert lost == 0 and duplicated == 0
    assert dead_lettered == len(stream.poison) > 0
