"""A recreated events topic (the in-memory dev broker restarted, or an operator deleted
and created it) counts offsets from 0 again: neither the stored states' offsets nor the
recovery positions of the old topic may make the flow skip its events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from core.catalog import Catalog, CatalogProvider
from core.events import ValidEvent
from core.settings import Settings
from core.state import Trend, UserState
from dataflow.incarnation import Incarnation, adopt_log
from dataflow.parsing import Accepted
from dataflow.recovery import TOPIC_ID_FILE, recovery_config
from dataflow.runner import DataflowThread
from dataflow.trends import TrendFolder
from dataflow.users import UserFolder
from eventlog.admin import ensure_app_topics, events_log_id
from eventlog.producer import PRODUCER_CONFIG
from featurestore import FeatureStore
from infra.broker import DevBroker, free_port
from tests.helpers import isolated_settings, make_model, publish

T0 = 1_700_000_000.0


def accepted(user: str, item: str, offset: int, ts: float, partition: int = 0) -> Accepted:
    return Accepted(ValidEvent("view", user, item, ts, None), partition, offset, ts)


def resets(step: str) -> float:
    return REGISTRY.get_sample_value("recsys_offsets_reset_total", {"step": step}) or 0.0


def test_offsets_of_another_topic_incarnation_are_dropped_before_folding(tmp_path: Path):
    settings = isolated_settings(tmp_path / "var")
    no_model = CatalogProvider(lambda: None, lambda v: None)  # type: ignore[arg-type,return-value]
    incarnation = Incarnation("new")
    users = UserFolder(settings, None, no_model, incarnation)  # type: ignore[arg-type]
    before = resets("user")

    old = UserState("u", event_count=5, offsets={0: 4}, log_id="old")
    assert users.fold(old, [accepted("u", "i1", 0, T0), accepted("u", "i1", 1, T0 + 1)])
    assert (old.event_count, old.offsets, old.log_id) == (7, {0: 1}, "new")
    assert resets("user") == before + 1
    # Within one incarnation a replay is still a replay.
    assert not users.fold(old, [accepted("u", "i1", 1, T0 + 1)])
    assert old.event_count == 7 and resets("user") == before + 1

    record, item_records, vecs, _ = make_model("v1", n=3, n_profiles=1)
    model = CatalogProvider(lambda: "v1", lambda v: Catalog(v, item_records, vecs, record.head))
    items = TrendFolder(settings, None, model, incarnation)  # type: ignore[arg-type]
    t = Trend("i1", 2.0, T0, {0: 4}, "old")
    assert items.fold(t, [accepted("u", "i1", 0, T0 + 1)])
    assert (t.offsets, t.log_id) == ({0: 0}, "new") and t.score > 2.0


def test_offsets_without_a_known_incarnation_are_kept():
    # A broker without topic ids: offsets are trusted as before.
    s = UserState("u", offsets={0: 4}, log_id="old")
    assert not adopt_log(s, None) and (s.offsets, s.log_id) == ({0: 4}, "old")
    # A state stored before ids were kept adopts the current id with its offsets: dropping
    # them would count a re-read of the same topic twice.
    legacy = UserState("u", offsets={0: 4})
    assert not adopt_log(legacy, "now") and (legacy.offsets, legacy.log_id) == ({0: 4}, "now")
    same = Trend("i", 1.0, T0, {1: 3}, "now")
    assert not adopt_log(same, "now") and same.offsets == {1: 3}


def test_recovery_of_another_topic_incarnation_is_moved_aside(tmp_path: Path):
    settings = isolated_settings(tmp_path / "var")
    db = Path(settings.recovery.dir)  # type: ignore[arg-type]
    assert recovery_config(settings, "A") is not None
    part = db / "part-0.sqlite3"
    stamp = part.stat().st_mtime_ns, part.stat().st_ino
    assert recovery_config(settings, "A") is not None  # same topic: resumed as it is
    assert recovery_config(settings, None) is not None  # no id known: kept
    assert (part.stat().st_mtime_ns, part.stat().st_ino) == stamp
    assert (db / TOPIC_ID_FILE).read_text().strip() == "A"

    assert recovery_config(settings, "B") is not None  # recreated: a fresh partition
    assert (db / TOPIC_ID_FILE).read_text().strip() == "B"
    assert part.exists() and part.stat().st_ino != stamp[1]
    (aside,) = db.glob("retired-*")
    assert (aside / TOPIC_ID_FILE).read_text().strip() == "A"
    assert (aside / "part-0.sqlite3").exists()


def produce(settings: Settings, events: list[tuple[str, str, float]]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, **PRODUCER_CONFIG})
    for user, item, ts in events:
        e = {"event_type": "view", "user_id": user, "item_id": item, "timestamp": ts}
        p.produce(settings.kafka.events_topic, key=user.encode(), value=json.dumps(e).encode())
    assert p.flush(10) == 0


def run_to_end(settings: Settings, store: FeatureStore) -> None:
    flow = DataflowThread(settings, store, store.catalog_provider()).start()
    assert flow.join(30), "the flow did not reach the end of the topic"


@pytest.mark.integration
def test_a_restarted_dev_broker_is_read_from_its_start(tmp_path: Path):
    """`just serve` restarted: the in-memory broker's new topic starts at offset 0 again.

    One partition, so positions are predictable: the old topic held u's events at 0..4
    (recovery resumes at 5). The new one holds w's at 0..3 and u's next two at 4 and 5.
    Resuming at 5 would miss w and u's first; u's stored offsets would skip offset 4.
    """
    port = free_port()
    logs = tmp_path / "broker.log"
    with DevBroker(port, log_path=logs) as first:
        settings = isolated_settings(
            tmp_path / "var", first.bootstrap, exit_at_end=True, topic_partitions=1
        )
        old_id = events_log_id(settings)
        store = FeatureStore.open(settings)
        publish(store, n=10, dim=8)
        produce(settings, [("u", "i1", T0 + k) for k in range(5)])
        run_to_end(settings, store)
    try:
        assert store.read_user_state("u").event_count == 5  # type: ignore[union-attr]
        before = store.read_trends(["i1"])["i1"]
        with DevBroker(port, log_path=logs):
            ensure_app_topics(settings)
            new_id = events_log_id(settings)
            assert new_id is not None and new_id != old_id
            produce(settings, [("w", "i3", T0 + 10 + k) for k in range(4)])
            produce(settings, [("u", "i1", T0 + 20), ("u", "i1", T0 + 21)])
            run_to_end(settings, store)

        got = store.read_user_states(["u", "w"])
        assert got["u"].event_count == 7 and got["u"].log_id == new_id
        assert got["w"].event_count == 4
        trends = store.read_trends(["i1", "i3"])
        assert trends["i1"].offsets == {0: 5} and trends["i1"].log_id == new_id
        assert trends["i1"].ts == T0 + 21 and trends["i1"].score > before.score
        assert trends["i3"].offsets == {0: 3}
        retired = list(Path(settings.recovery.dir).glob("retired-*"))  # type: ignore[arg-type]
        assert len(retired) == 1
    finally:
        store.close()


def test_recovery_snapshots_keep_the_topic_id():
    s = UserState("u", event_count=3, offsets={0: 2}, log_id="A")
    assert UserState.from_snapshot(s.to_snapshot()) == s
    t = Trend("i1", 1.5, T0, {0: 2}, "A")
    assert Trend.from_snapshot(t.to_snapshot()) == t


def test_store_payloads_keep_the_topic_id():
    s = UserState("u", event_count=3, offsets={0: 2}, log_id="A", model_version="v1")
    assert UserState.from_payload(s.to_payload(), None) == s
    t = Trend("i1", 1.5, T0, {0: 2}, "A")
    assert Trend.from_payload(t.to_payload()) == t
