"""The real-time shapes the dataflow keeps and the store holds: a user's decayed state and
an item's decayed count, each with its two encodings.

- the store payload (``to_payload``/``from_payload``): JSON, shaped for Qdrant's per-field
  write cost;
- the recovery snapshot (``to_snapshot``/``from_snapshot``): a msgpack tuple, in Bytewax's
  recovery for a state changed but not written to the store yet (``dataflow.shards``).
  A snapshot built from the payload string plus the vector's bytes would be one encoding
  less, but costs 1.7-2.5x as much to write (user with 5 recent items: 1.7 us vs 3.0-3.8
  us; trend: 0.6 us vs 1.4 us) and is ~40 % larger.

The seen rows travel as raw int32 in both (native byte order: little-endian on every
platform this runs on): 4 bytes a row in the snapshot, ~5.3 in the payload's base64.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

_json = msgspec.json.Encoder().encode
_pack = msgspec.msgpack.Encoder().encode


class RecentItem(msgspec.Struct, array_like=True, gc=False):
    """An item the user interacted with recently. A msgspec Struct: the fold builds one
    per event, ~2.5x cheaper than a slotted dataclass; stored as the array
    ``[item_id, ts, event_type]``, encoded and decoded without a tuple per item."""

    item_id: str
    ts: float
    event_type: str


@dataclass(slots=True)
class UserState:
    """Everything the API needs about a user's recent behaviour."""

    user_id: str
    vector: np.ndarray | None = None
    """Decayed sum of weighted item vectors as of ``last_ts`` (not normalised)."""
    mass: float = 0.0
    """Decayed sum of the weights that went into ``vector``."""
    last_ts: float = -math.inf
    categories: dict[str, float] = field(default_factory=dict)
    """Decayed event weight per category as of ``last_ts``."""
    recent: list[RecentItem] = field(default_factory=list)
    """Most recent items, oldest first."""
    session_id: str | None = None
    session_start: float = 0.0
    session_events: int = 0
    event_count: int = 0
    unknown_items: int = 0
    """Events whose item had no vector in the model: counted, kept in ``recent``."""
    model_version: str | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    """Last Kafka offset applied per partition; replays at or below it are skipped."""
    log_id: str | None = None
    """Id of the events topic incarnation ``offsets`` belong to (Kafka topic id): after
    the topic is recreated its offsets restart at 0, so offsets of another id are void."""
    seen_rows: array[int] = field(default_factory=lambda: array("i"))
    """The items the user interacted with, as int32 rows of ``model_version``'s catalogue,
    in the order folded: at least the newest ``fold.seen_cap`` distinct ones, at most a
    quarter more rows (``core.fold``): what ``exclude_seen`` leaves out. Items outside the
    catalogue have no row (they cannot be recommended anyway); a model switch maps the
    rows through item ids."""

    def seen(self, partition: int, offset: int) -> bool:
        return offset <= self.offsets.get(partition, -1)

    def to_payload(self) -> dict[str, Any]:
        """Everything, the user id included, as one JSON string.

        Qdrant Edge converts a payload element by element, and each string value costs ~9 us
        per write (20 recent items as nested lists ~250 us); this write is the dataflow's
        largest cost, so the payload is one field and readable extras stay out
        (``GET /users/{id}`` shows them). The point is read by id only, so nothing needs
        the user id as a field of its own.
        """
        last = self.last_ts if math.isfinite(self.last_ts) else None
        return {
            "features": _json(
                _Features(
                    mass=self.mass,
                    has_vector=self.vector is not None,
                    last_ts=last,
                    categories=self.categories,
                    recent=self.recent,
                    session=(self.session_id, self.session_start, self.session_events),
                    unknown_items=self.unknown_items,
                    offsets=self.offsets,
                    log_id=self.log_id,
                    event_count=self.event_count,
                    model_version=self.model_version,
                    seen=self.seen_rows.tobytes(),
                    user_id=self.user_id,
                )
            ).decode(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], vector: list[float] | None) -> UserState:
        f = _decode_features(payload["features"])
        return cls(
            user_id=f.user_id if f.user_id is not None else payload["user_id"],
            vector=(
                np.asarray(vector, dtype=np.float32)
                if vector is not None and f.has_vector
                else None
            ),
            mass=f.mass,
            last_ts=-math.inf if f.last_ts is None else f.last_ts,
            categories=f.categories,
            recent=f.recent,
            session_id=f.session[0],
            session_start=f.session[1],
            session_events=f.session[2],
            event_count=f.event_count,
            unknown_items=f.unknown_items,
            model_version=f.model_version,
            offsets=f.offsets,
            log_id=f.log_id,
            seen_rows=_rows(f.seen),
        )

    def to_snapshot(self) -> bytes:
        """The recovery snapshot: every field, the vector as raw float32 bytes."""
        v = self.vector
        return _pack(
            (
                self.user_id,
                None if v is None else v.tobytes(),
                self.mass,
                self.last_ts,
                self.categories,
                self.recent,
                self.session_id,
                self.session_start,
                self.session_events,
                self.event_count,
                self.unknown_items,
                self.model_version,
                self.offsets,
                self.log_id,
                self.seen_rows.tobytes(),
            )
        )

    @classmethod
    def from_snapshot(cls, b: bytes) -> UserState:
        fields = _unpack_user(b)
        (
            u,
            vec,
            mass,
            last,
            cats,
            recent,
            sid,
            sstart,
            sev,
            n,
            unknown,
            version,
            offs,
            log_id,
            seen,
        ) = fields
        return cls(
            u,
            None if vec is None else np.frombuffer(vec, dtype=np.float32).copy(),
            mass,
            last,
            cats,
            recent,
            sid,
            sstart,
            sev,
            n,
            unknown,
            version,
            offs,
            log_id,
            _rows(seen),
        )


def _rows(b: bytes) -> array[int]:
    rows = array("i")
    rows.frombytes(b)
    return rows


_UserFields = tuple[
    str,
    bytes | None,
    float,
    float,
    dict[str, float],
    list[RecentItem],
    str | None,
    float,
    int,
    int,
    int,
    str | None,
    dict[int, int],
    str | None,
    bytes,
]
_unpack_user = msgspec.msgpack.Decoder(_UserFields).decode


class _Features(msgspec.Struct):
    mass: float
    has_vector: bool
    last_ts: float | None
    categories: dict[str, float]
    recent: list[RecentItem]
    session: tuple[str | None, float, int]
    unknown_items: int
    offsets: dict[int, int]
    log_id: str | None
    event_count: int
    model_version: str | None
    seen: bytes = b""
    """``seen_rows`` as raw int32 (base64 in the JSON), decoded without parsing a number
    per row."""
    user_id: str | None = None
    """None in a payload written with the user id as a field of its own beside this one."""


_decode_features = msgspec.json.Decoder(_Features).decode


@dataclass(slots=True)
class Trend:
    item_id: str
    score: float
    """Decayed event weight as of ``ts``."""
    ts: float
    offsets: dict[int, int] = field(default_factory=dict)
    """Last Kafka offset counted per partition, as for user state."""
    log_id: str | None = None
    """Events topic incarnation the offsets belong to, as for user state."""
    users: list[int] = field(default_factory=list)
    """Distinct users on the item since it last went quiet (CRC-32 of the id, never the
    id), kept until ``fold.trending_min_users`` is reached: see ``dataflow.trends``."""
    trending: bool = True
    """Whether the item counts as "trending now" (enough distinct users). The indexed
    ``score`` of the store payload is 0 otherwise, so the top trends never list it. True
    for a count kept without that rule (a Trend built bare, a point stored before it)
    until it next goes quiet."""

    def to_payload(self) -> dict[str, Any]:
        """``score`` (indexed: the top trends are read by it; 0 while not trending) and the
        rest as one string: each payload field costs a write ~3 us, a nested offsets map
        ~35 us."""
        return {"score": self.score if self.trending else 0.0, "trend": _encode_trend(self)}

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Trend:
        t = _decode_trend(p["trend"])
        score = float(p["score"]) if t.score is None else t.score
        return cls(t.item_id, score, t.ts, t.offsets, t.log_id, t.users, t.trending)

    def to_snapshot(self) -> bytes:
        """The recovery snapshot."""
        return _pack(
            (
                self.item_id,
                self.score,
                self.ts,
                self.offsets,
                self.log_id,
                self.users,
                self.trending,
            )
        )

    @classmethod
    def from_snapshot(cls, b: bytes) -> Trend:
        t = _unpack_trend(b)
        return cls(t.item_id, t.score, t.ts, t.offsets, t.log_id, t.users, t.trending)


class _TrendSnapshot(msgspec.Struct, array_like=True):
    """The snapshot tuple."""

    item_id: str
    score: float
    ts: float
    offsets: dict[int, int]
    log_id: str | None
    users: list[int]
    trending: bool


_unpack_trend = msgspec.msgpack.Decoder(_TrendSnapshot).decode


class _TrendFields(msgspec.Struct, omit_defaults=True):
    item_id: str
    ts: float
    offsets: dict[int, int]
    log_id: str | None
    users: list[int] = []
    trending: bool = True
    score: float | None = None
    """The score while not trending (the indexed one is 0 then)."""


def _encode_trend(t: Trend) -> str:
    return _json(
        _TrendFields(
            t.item_id,
            t.ts,
            t.offsets,
            t.log_id,
            t.users,
            t.trending,
            None if t.trending else t.score,
        )
    ).decode()


_decode_trend = msgspec.json.Decoder(_TrendFields).decode
