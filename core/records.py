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
        known = {"item_id", "title", "categories", "popularity", "model_version", "rev"}
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


_json = msgspec.json.Encoder().encode
_decode_seen = msgspec.json.Decoder(list[str]).decode


def normalize(v: np.ndarray) -> np.ndarray:
    """``v`` over its L2 norm (``np.linalg.norm``'s value, without its overhead: the
    request path normalises several vectors)."""
    flat = v.ravel()
    n = float(np.sqrt(flat.dot(flat)))
    return v / n if n > 0 else v
