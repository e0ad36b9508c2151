"""What the feature store holds, and how each record maps to a Qdrant payload.

Both adapters store exactly these payloads, so the contract tests can compare them.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np


def iso(ts: float) -> str | None:
    if not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


# --- Real-time user features (written by the dataflow) -----------------------


@dataclass(slots=True)
class RecentItem:
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

    def seen(self, partition: int, offset: int) -> bool:
        return offset <= self.offsets.get(partition, -1)

    def to_payload(self) -> dict[str, Any]:
        """The user id (indexed) and everything else as one JSON string.

        Qdrant converts a payload element by element, and each top-level field costs
        ~3 us more per write (20 recent items as nested lists ~250 us, one string ~15 us);
        this write is the dataflow's largest cost, so readable extras stay out
        (``GET /users/{id}`` shows them).
        """
        last = self.last_ts if math.isfinite(self.last_ts) else None
        return {
            "user_id": self.user_id,
            "features": _json(
                _Features(
                    mass=self.mass,
                    has_vector=self.vector is not None,
                    last_ts=last,
                    categories=self.categories,
                    recent=[(r.item_id, r.ts, r.event_type) for r in self.recent],
                    session=(self.session_id, self.session_start, self.session_events),
                    unknown_items=self.unknown_items,
                    offsets=self.offsets,
                    log_id=self.log_id,
                    event_count=self.event_count,
                    model_version=self.model_version,
                )
            ).decode(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], vector: list[float] | None) -> UserState:
        f = _decode_features(payload["features"])
        return cls(
            user_id=payload["user_id"],
            vector=(
                np.asarray(vector, dtype=np.float32)
                if vector is not None and f.has_vector
                else None
            ),
            mass=f.mass,
            last_ts=-math.inf if f.last_ts is None else f.last_ts,
            categories=f.categories,
            recent=[RecentItem(i, t, e) for i, t, e in f.recent],
            session_id=f.session[0],
            session_start=f.session[1],
            session_events=f.session[2],
            event_count=int(
                payload.get("event_count", 0) if f.event_count is None else f.event_count
            ),
            unknown_items=f.unknown_items,
            model_version=f.model_version or payload.get("model_version"),
            offsets=f.offsets,
            log_id=f.log_id,
        )


class _Features(msgspec.Struct):
    mass: float
    has_vector: bool
    last_ts: float | None
    categories: dict[str, float]
    recent: list[tuple[str, float, str]]
    session: tuple[str | None, float, int]
    unknown_items: int
    offsets: dict[int, int]
    log_id: str | None = None  # absent in states written before topic ids were kept
    # top-level payload fields in states written before 2026-11-30:
    event_count: int | None = None
    model_version: str | None = None


_json = msgspec.json.Encoder().encode
_decode_features = msgspec.json.Decoder(_Features).decode


# --- Items and models (written by training's publish step) -------------------


@dataclass(slots=True)
class ItemRecord:
    item_id: str
    title: str
    categories: list[str]
    popularity: float = 0.0
    """Share of training interactions, log-scaled to [0, 1]."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_payload(self, version: str) -> dict[str, Any]:
        return {
            **self.extra,
            "item_id": self.item_id,
            "title": self.title,
            "categories": self.categories,
            "popularity": self.popularity,
            "model_version": version,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ItemRecord:
        known = {"item_id", "title", "categories", "popularity", "model_version"}
        return cls(
            item_id=payload["item_id"],
            title=payload.get("title", ""),
            categories=list(payload.get("categories") or []),
            popularity=float(payload.get("popularity", 0.0)),
            extra={k: v for k, v in payload.items() if k not in known},
        )


@dataclass(slots=True)
class UserHead:
    """The user tower's head, applied to a pooled item-space vector.

    u = normalise(p + relu(p W1 + b1) W2 + b2), p = normalise(pooled). Training learns it
    on exactly the decayed pooling the dataflow computes, so a real-time vector and a
    long-term profile land in the same space. Numpy keeps torch out of serving.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def apply(self, pooled: np.ndarray) -> np.ndarray:
        p = normalize(pooled)
        h = np.maximum(p @ self.w1 + self.b1, 0.0)
        return normalize(p + h @ self.w2 + self.b2)

    def to_b64(self) -> str:
        buf = io.BytesIO()
        np.savez(buf, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)
        return base64.b64encode(buf.getvalue()).decode()

    @classmethod
    def from_b64(cls, data: str) -> UserHead:
        z = np.load(io.BytesIO(base64.b64decode(data)))
        return cls(*(z[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2")))


@dataclass(slots=True)
class ModelRecord:
    """A published model version as the registry in the store knows it."""

    version: str
    dim: int
    created_at: str
    head: UserHead
    metrics: dict[str, Any] = field(default_factory=dict)
    items: int = 0
    profiles: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dim": self.dim,
            "created_at": self.created_at,
            "user_head": self.head.to_b64(),
            "metrics": self.metrics,
            "items": self.items,
            "profiles": self.profiles,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ModelRecord:
        return cls(
            version=payload["version"],
            dim=int(payload["dim"]),
            created_at=payload["created_at"],
            head=UserHead.from_b64(payload["user_head"]),
            metrics=payload.get("metrics") or {},
            items=int(payload.get("items", 0)),
            profiles=int(payload.get("profiles", 0)),
        )


@dataclass(slots=True)
class Profile:
    """A user's long-term vector from the offline model, and what they had seen."""

    user_id: str
    vector: np.ndarray
    seen: list[str]

    def to_payload(self, version: str) -> dict[str, Any]:
        # One JSON string rather than a list: read on every request, converted per element.
        return {
            "user_id": self.user_id,
            "model_version": version,
            "seen": _json(self.seen).decode(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], vector: list[float] | None) -> Profile:
        return cls(
            payload["user_id"], np.asarray(vector, dtype=np.float32), _decode_seen(payload["seen"])
        )


_decode_seen = msgspec.json.Decoder(list[str]).decode


def normalize(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
