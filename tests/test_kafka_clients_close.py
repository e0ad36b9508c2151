"""Kafka clients end with their owner: nothing queued is left to reconnect to a broker
that is gone (the librdkafka "Connect to ... failed" lines after a test run)."""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from eventlog.health import KafkaWatch
from eventlog.producer import BackgroundProducer, EventProducer, close_producer
from infra.broker import free_port

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
