"""The events producer recovers from a broker that forgot it (more faults: test_faults.py)."""

from __future__ import annotations

import time

import pytest

import eventlog.producer
from core.events import ValidEvent
from eventlog.admin import ensure_app_topics
from infra.broker import DevBroker, free_port

pytestmark = pytest.mark.integration


def test_events_are_accepted_again_after_the_broker_forgot_the_producer(make_settings):
    """The in-memory dev broker restarted: it no longer knows the idempotent producer's id,
    so that producer could never deliver again. The request that finds out gets 503 (within
    the send timeout); the next one goes through on a new producer."""
    port = free_port()
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{port}")
    producer = eventlog.producer.EventProducer(settings)
    event = ValidEvent("view", "zoe", "i1", time.time(), None)
    try:
        with DevBroker(port):
            ensure_app_topics(settings)
            producer.send([event])
        with DevBroker(port):
            ensure_app_topics(settings)
            failures = 0
            while True:
                try:
                    producer.send([event])
                    break
                except eventlog.producer.ProducerUnavailable:
                    failures += 1
                    assert failures <= 1
    finally:
        producer.close()
