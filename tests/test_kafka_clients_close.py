"""Kafka clients end with their owner: nothing queued is left to reconnect to a broker
that is gone (the librdkafka "Connect to ... failed" lines after a test run)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from confluent_kafka import Producer

from dataflow.runner import DataflowThread
from eventlog.health import KafkaWatch
from eventlog.producer import BackgroundProducer, EventProducer, close_producer
from featurestore import FeatureStore
from infra.broker import free_port
from tests.helpers import publish, wait_for

NOWHERE = f"127.0.0.1:{free_port()}"  # nothing listens there


def test_closing_a_producer_gives_up_what_no_broker_took_and_reports_each_message():
    reports = []
    p = Producer({"bootstrap.servers": NOWHERE, "log_level": 0})
    for n in range(3):
        p.produce("events", b"%d" % n, on_delivery=lambda err, _msg: reports.append(err))
    assert close_producer(p, 0.2) == 3
    assert len(reports) == 3 and all(err is not None for err in reports)
    assert close_producer(p, 0.2) == 0  # closing twice is harmless


def test_a_closed_background_producer_drops_messages_instead_of_raising(make_settings):
    settings = make_settings(bootstrap_servers=NOWHERE)
    outcomes: list[bool] = []
    bg = BackgroundProducer(settings, "impressions", outcomes.append, "test-bg").start()
    assert bg.send(b"u1", b"{}")
    bg.close(timeout=0.2)
    assert outcomes == [False]
    assert not bg.send(b"u1", b"{}")
    assert not any(t.name == "test-bg" for t in threading.enumerate())


def test_the_event_producer_and_the_kafka_watch_leave_no_thread_behind(make_settings):
    settings = make_settings(bootstrap_servers=NOWHERE)
    before = set(threading.enumerate())  # other tests' services may still be stopping
    watch = KafkaWatch(settings).start()
    EventProducer(settings, watch).close()
    watch.close()
    assert not any(t.name == "kafka-watch" for t in set(threading.enumerate()) - before)


def _librdkafka_threads() -> set[str]:
    """The librdkafka clients alive in this process, by the id of the "rdk:main" thread
    each one runs."""
    out = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "rdk:main":
                out.add(task.name)
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return out


def _librdkafka_clients() -> int:
    return len(_librdkafka_threads())


def test_a_closed_watch_destroys_its_admin_client_even_if_something_still_holds_the_watch(
    make_settings,
):
    """The API's resources form a cycle and the model watch freezes everything alive out of
    the garbage collector's sight (``gc.freeze``), so closing must not wait for the
    collector: a client left to the interpreter's exit may crash it. (Clients of other
    tests' services may start or end meanwhile: the watch's own thread is followed.)"""
    settings = make_settings(bootstrap_servers=NOWHERE)
    before = _librdkafka_threads()
    held = [KafkaWatch(settings).start()]
    started = _librdkafka_threads() - before
    assert started, "the watch runs a librdkafka client"
    held[0].close()
    assert wait_for(lambda: len(started & _librdkafka_threads()) < len(started), timeout=5)
    assert held[0].probe().error == "the watch is closed"


@pytest.mark.integration
def test_a_flow_that_ends_by_itself_leaves_no_kafka_client_behind(broker, make_settings):
    settings = make_settings(broker, exit_at_end=True)
    store = FeatureStore.open(settings)
    publish(store, "v1", n=10, dim=8)
    before_threads = set(threading.enumerate())
    before = _librdkafka_clients()
    try:
        flow = DataflowThread(settings, store, store.catalog_provider()).start()
        assert flow.join(60), "the flow did not reach the end of the empty topic"
        left = wait_for(
            lambda: (
                _librdkafka_clients() == before
                and not any(
                    t.name == "kafka-watch" for t in set(threading.enumerate()) - before_threads
                )
            ),
            timeout=10,
        )
        assert left
    finally:
        store.close()
