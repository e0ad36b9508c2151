"""Event validation at the edge (shared by the dataflow and POST /events)."""

from __future__ import annotations

import pytest

from core.events import InvalidEvent, ValidEvent, decode, decode_many, encode, validate
from core.settings import Settings

TYPES = {"view", "purchase"}
NOW = 1_740_000_000.0  # 2025-02-19
FLOOR = Settings().fold.min_timestamp.timestamp()


def check(raw: bytes, fallback: float | None = None) -> ValidEvent:
    return validate(decode(raw), TYPES, NOW, 300.0, fallback, min_ts=FLOOR)


def test_the_documented_event_shape_with_extra_fields():
    e = check(
        b'{"event_type": "view", "user_id": "u123", "item_id": "i42", '
        b'"timestamp": "2024-11-07T10:00:00Z", "session_id": "s9", "device": "ios"}'
    )
    assert e == ValidEvent("view", "u123", "i42", 1730973600.0, "s9")


def test_unix_seconds_and_offsets_are_accepted():
    assert (
        check(b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":1700000000}').ts
        == 1.7e9
    )
    e = check(
        b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":"2024-11-07T12:00:00+02:00"}'
    )
    assert e.ts == 1730973600.0


def test_missing_timestamp_uses_the_fallback_or_is_refused():
    assert check(b'{"event_type":"view","user_id":"u","item_id":"i"}', fallback=1e9).ts == 1e9
    with pytest.raises(InvalidEvent, match="timestamp is required"):
        check(b'{"event_type":"view","user_id":"u","item_id":"i"}')


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"nope", "malformed JSON"),
        (b'{"event_type":"view","user_id":"u"}', "missing required field `item_id`"),
        (
            b'{"event_type":"view","user_id":7,"item_id":"i","timestamp":1}',
            "Expected `str`, got `int` - at `$.user_id`",
        ),
        (b'{"event_type":"view","user_id":"","item_id":"i","timestamp":1}', "user_id"),
        (
            b'{"event_type":"fly","user_id":"u","item_id":"i","timestamp":1}',
            "unknown event_type 'fly'",
        ),
        (b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":"yesterday"}', "timestamp"),
        (
            b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":"2024-11-07T10:00:00"}',
            "timezone",
        ),
        (
            b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":1740000301}',
            "in the future",
        ),
        (
            # Unix milliseconds by mistake: rejected with a hint, never a crash (year > 9999)
            b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":1740000000000}',
            "milliseconds instead of seconds?",
        ),
        (b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":1e300}', "in the future"),
        (b'{"event_type":"view","user_id":"u","item_id":"i","timestamp":-5}', "not a valid time"),
        (b'[{"event_type":"view","user_id":"u","item_id":"i","timestamp":1}]', "invalid event"),
    ],
)
def test_invalid_events_say_why(raw, reason):
    with pytest.raises(InvalidEvent) as e:
        check(raw)
    assert reason in str(e.value)


def test_decode_many_takes_one_or_a_list():
    one = b'{"event_type":"view","user_id":"u","item_id":"i"}'
    assert len(decode_many(one)) == 1
    assert len(decode_many(b"[" + one + b"," + one + b"]")) == 2


def test_encode_round_trips():
    e = ValidEvent("purchase", "u1", "i9", 1730973600.5, None)
    assert check(encode(e)) == e
