"""The bad-input matrix: every kind of bad or odd message has a defined outcome and a
metric. Rejected messages reach the dead-letter topic with their original bytes and the
reason (see also tests/test_dataflow_integration.py and tests/test_events.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from core.settings import Settings
from dataflow.parsing import Accepted, Parser
from dataflow.runner import DataflowThread
from featurestore import FeatureStore
from tests.helpers import publish, wait_for
from tests.test_dataflow_integration import ev, produce, read_dead_letters

T0 = 1_700_000_000.0


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class _ErrorMessage:
    """What confluent-kafka's consumer returns for a partition-level error: a Message
    whose ``error()`` is set. (A real one cannot be made on demand against a broker.)"""

    def __init__(self, err: KafkaError, value: bytes | None = None) -> None:
        self._err, self._value = err, value

    def error(self) -> KafkaError:
        return self._err

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41


def test_kafka_errors_from_the_source_are_dead_lettered_not_dropped():
    parser = Parser(Settings())
    err = KafkaError(KafkaError._VALUE_DESERIALIZATION, "bad bytes")
    out = parser.parse_batch([_ErrorMessage(err, b"\x00\xff")])  # type: ignore[list-item]
    assert len(out) == 1 and not isinstance(out[0], Accepted)
    r = out[0]
    assert (r.kind, r.value, r.partition, r.offset) == ("kafka_error", b"\x00\xff", 2, 41)
    headers = dict(r.to_sink().headers)
    assert b"bad bytes" in headers["dlq.reason"] and headers["dlq.source"] == b"events:2:41"


@pytest.mark.integration
def test_each_kind_of_bad_input_has_an_outcome_and_a_metric(broker, make_settings):
    settings = make_settings(broker)
    store = FeatureStore.open(settings)
    _, _, vecs, _ = publish(store)
    flow = DataflowThread(settings, store, store.catalog_provider()).start()
    rejected = {
        b"{not json": "malformed_json",
        json.dumps({"event_type": "view", "user_id": 7, "item_id": "i1"}).encode(): (
            "invalid_field"
        ),
        json.dumps({"user_id": "mia"}).encode(): "invalid_field",
        json.dumps(ev("mia", "i1", T0, "teleport")).encode(): "unknown_event_type",
        json.dumps(ev("mia", "i1", 4e9)).encode(): "future_timestamp",
        json.dumps(ev("mia", "i1", -1)).encode(): "invalid_timestamp",
        json.dumps(ev("mia", "i1", 0)).encode(): "too_old",
        json.dumps(ev("mia\n", "i1", T0)).encode(): "invalid_id",
        b'{"event_type":"view","user_id":"mia","item_id":"1","x":'
        + b"[" * 5000
        + b"]" * 5000
        + b"}": "too_deep",
        json.dumps(ev("mia", "i1", T0, pad="x" * 20_000)).encode(): "oversized",
    }
    kinds = set(rejected.values())
    before = {k: metric("recsys_events_dead_lettered_total", reason=k) for k in kinds}
    late0, unknown0 = metric("recsys_events_late_total"), metric("recsys_events_unknown_item_total")
    try:
        wait_for(flow.running.is_set)
        produce(settings, list(rejected))
        produce(
            settings,
            [
                ev("mia", "i1", T0),
                ev("mia", "no-such-item", T0 + 1),  # unknown item: kept, counted
                ev("mia", "i3", T0 - 1e8),  # far in the past: a late event, weight ~0
            ],
        )
        dead = read_dead_letters(settings, len(rejected))
        assert sorted(m.value() for m in dead) == sorted(rejected)  # the original bytes
        for m in dead:
            assert dict(m.headers())["dlq.kind"].decode() == rejected[m.value()]
        s = wait_for(lambda: (s := store.read_user_state("mia")) and s.event_count == 3 and s)
    finally:
        flow.stop()
        store.close()
    for k in kinds:
        n = sum(v == k for v in rejected.values())
        assert metric("recsys_events_dead_lettered_total", reason=k) - before[k] == n, k
    assert metric("recsys_events_unknown_item_total") - unknown0 == 1
    assert metric("recsys_events_late_total") - late0 == 1
    assert s.unknown_items == 1 and s.last_ts == T0 + 1  # the clock never moves back
    decayed = vecs[1] * 2.0 ** (-1 / settings.fold.half_life_seconds)  # i1, one second old
    np.testing.assert_allclose(s.vector, decayed, rtol=1e-5)  # 2020's view weighs nothing
    assert [r.item_id for r in s.recent] == ["i3", "i1", "no-such-item"]
