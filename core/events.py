"""The event contract: what producers may put on the events topic.

Decoding uses msgspec because it runs once per event on the hot path (about 0.2 us
for a typical event). The same decoder validates ``POST /events`` in the API, so a
request the API accepts is exactly what the dataflow folds.

Every way a message can be wrong ends in ``InvalidEvent`` with a reason and a ``kind``:
malformed or too deeply nested JSON, a wrong field, an unknown type, an id that could
not be read back through the API, a timestamp in the future or before the floor.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Annotated

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
"""user_id and item_id: 1-256 printable characters (``str.isprintable``: no control,
format, separator other than the space, or surrogate characters), no ``/``, and neither
``.`` nor ``..``: exactly the ids ``GET /users/{id}`` and ``GET /recommendations/{id}`` can
be asked for (percent-encoded). ``validate`` checks what the type cannot say."""

_DOT_SEGMENTS = frozenset((".", ".."))


class Event(msgspec.Struct, forbid_unknown_fields=False):
    """One user interaction. Unknown extra fields are accepted and ignored."""

    event_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    user_id: Id
    item_id: Id
    timestamp: datetime | float | None = None
    """RFC 3339 with a timezone, or Unix seconds. Missing: the Kafka record time is used."""
    session_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class ValidEvent(msgspec.Struct, frozen=True, gc=False):
    """A validated event with its time as Unix seconds (the fold's clock).

    A msgspec Struct: built once per event, ~4x cheaper than a frozen dataclass."""

    event_type: str
    user_id: str
    item_id: str
    ts: float
    session_id: str | None


class InvalidEvent(ValueError):
    """Raised with a human-readable reason; the dataflow dead-letters it, the API answers 422.

    ``kind`` classifies the reason for metrics and the dead-letter header.
    """

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


_decoder = msgspec.json.Decoder(Event)
_list_decoder = msgspec.json.Decoder(Event | list[Event])

EVENT_JSON_SCHEMA = msgspec.json.schema(Event)


def to_unix(ts: datetime | float) -> float:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise InvalidEvent(
                "timestamp must carry a timezone, e.g. 2024-11-07T10:00:00Z", "invalid_timestamp"
            )
        return ts.timestamp()
    return float(ts)


def validate(
    event: Event,
    event_types: Collection[str],
    now: float,
    max_future_seconds: float,
    fallback_ts: float | None = None,
    *,
    min_ts: float,
) -> ValidEvent:
    """Check the rules msgspec's types cannot express. ``min_ts``: the oldest time
    accepted (Unix seconds; the ``min_timestamp`` setting, ``-inf`` for none)."""
    if event.event_type not in event_types:
        raise InvalidEvent(
            f"unknown event_type {event.event_type!r}; accepted: {sorted(event_types)}",
            "unknown_event_type",
        )
    u, i = event.user_id, event.item_id
    if (
        not (u.isprintable() and i.isprintable())
        or "/" in u
        or "/" in i
        or u in _DOT_SEGMENTS
        or i in _DOT_SEGMENTS
    ):
        raise InvalidEvent(_id_problem(event), "invalid_id")
    if event.timestamp is None:
        if fallback_ts is None:
            raise InvalidEvent("timestamp is required", "invalid_timestamp")
        ts = fallback_ts
    else:
        ts = to_unix(event.timestamp)
    if not math.isfinite(ts) or ts < 0:
        raise InvalidEvent(f"timestamp {event.timestamp} is not a valid time", "invalid_timestamp")
    if ts < min_ts:
        raise InvalidEvent(
            f"timestamp {_readable(ts)} is before {_readable(min_ts)}, the oldest accepted "
            "(RECSYS_FOLD_MIN_TIMESTAMP); a 0 or a 1970 date is usually a missing value",
            "too_old",
        )
    if ts > now + max_future_seconds:
        raise InvalidEvent(
            f"timestamp {_readable(ts)} is {ts - now:.0f}s in the future (limit "
            f"{max_future_seconds:.0f}s)"
            + ("; milliseconds instead of seconds?" if ts > 1e11 else ""),
            "future_timestamp",
        )
    return ValidEvent(event.event_type, event.user_id, event.item_id, ts, event.session_id)


def _id_problem(event: Event) -> str:
    """Why an id breaks the id rule (only called once the fast check failed)."""
    for name, value in (("user_id", event.user_id), ("item_id", event.item_id)):
        problem = id_problem(name, value)
        if problem:
            return problem
    return "invalid id"


def id_problem(name: str, value: str) -> str | None:
    """Why ``value`` breaks the id rule (``Id``), or None if it keeps it."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        at = value.index(bad)
        return (
            f"{name} {value!r} holds a non-printable character (U+{ord(bad):04X} at "
            f"position {at}): ids are 1-256 printable characters, no control characters"
        )
    if "/" in value:
        return (
            f"{name} {value!r} contains '/': an id with '/' could not be read back "
            f"through GET /users/{{id}} or GET /recommendations/{{id}}"
        )
    if value in _DOT_SEGMENTS:
        return (
            f"{name} {value!r} is a path segment ('.' or '..') that clients rewrite, so "
            "it could not be read back through GET /users/{id}"
        )
    return None


def _readable(ts: float) -> str:
    """ISO time for a message; a timestamp past year 9999 (milliseconds sent as seconds)
    cannot be a datetime and must not turn a rejection into a crash."""
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} (unix seconds)"


def decode(raw: bytes) -> Event:
    """Parse one JSON event; raises InvalidEvent with msgspec's message."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise InvalidEvent(f"invalid event: {e}", "invalid_field") from None
    except msgspec.DecodeError as e:
        raise InvalidEvent(f"malformed JSON: {e}", "malformed_json") from None
    except RecursionError:
        raise _too_deep() from None


def decode_many(raw: bytes) -> list[Event]:
    """Parse one event or a JSON list of events (the API's POST body)."""
    try:
        parsed = _list_decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise InvalidEvent(f"invalid event: {e}", "invalid_field") from None
    except msgspec.DecodeError as e:
        raise InvalidEvent(f"malformed JSON: {e}", "malformed_json") from None
    except RecursionError:
        raise _too_deep() from None
    return parsed if isinstance(parsed, list) else [parsed]


def _too_deep() -> InvalidEvent:
    """msgspec parses (and skips) nested values recursively, ignored extra fields too; a
    document nested deeper than the interpreter's recursion limit raises RecursionError."""
    return InvalidEvent(
        f"JSON nested too deeply to parse (the limit is about {sys.getrecursionlimit()} "
        "levels; an event is one flat object)",
        "too_deep",
    )


def encode(event: ValidEvent) -> bytes:
    """Canonical JSON for an accepted event (what the API produces to Kafka)."""
    return msgspec.json.encode(
        Event(
            event_type=event.event_type,
            user_id=event.user_id,
            item_id=event.item_id,
            timestamp=datetime.fromtimestamp(event.ts, tz=UTC),
            session_id=event.session_id,
        )
    )


class ErasureMarker(msgspec.Struct, forbid_unknown_fields=True):
    """A user's erasure (GDPR Art. 17), recorded on the events topic keyed by the user id.

    ``DELETE /users/{id}`` produces it; the dataflow drops the user's state when it reads
    it, and a replay of the topic ignores the user's events before it. Never a valid
    event (it has none of an event's required fields and allows no other field), so the
    parser tries it only on messages that failed as events: no cost per event.
    """

    erase_user: Id
    requested_at: float
    """Unix seconds when the erasure was requested."""
    before: dict[int, int] = {}
    """Per partition of the events topic, its end offset when the erasure was requested:
    the user's events below it came before the erasure (they matter on partitions other
    than the marker's, when partitions were added since the user's first events)."""

    @property
    def user_id(self) -> str:
        return self.erase_user


_erasure_decoder = msgspec.json.Decoder(ErasureMarker)


def encode_erasure(marker: ErasureMarker) -> bytes:
    return msgspec.json.encode(marker)


def decode_erasure(raw: bytes) -> ErasureMarker | None:
    """The marker ``raw`` holds, or None if it is not one."""
    try:
        return _erasure_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
