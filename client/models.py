"""The API's responses as typed objects (the OpenAPI document's schemas, the fields a
client reads; fields the server adds later are ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Item(_Response):
    item_id: str
    score: float
    title: str
    categories: list[str]
    reasons: list[str]
    score_breakdown: dict[str, float] | None = None


class Recommendations(_Response):
    request_id: str
    user_id: str
    model_version: str
    variant: str
    strategy: Literal["personalized", "cold_start"]
    realtime_weight: float
    candidates: int
    items: list[Item]


class SimilarItem(_Response):
    item_id: str
    title: str
    categories: list[str]
    score: float
    similarity: float
    covisit: float
    reason: str


class SimilarItems(_Response):
    item_id: str
    title: str
    model_version: str
    items: list[SimilarItem]


class RecentEvent(_Response):
    item_id: str
    title: str | None
    event_type: str
    time: str


class Session(_Response):
    id: str | None
    start: str | None
    events: int


class UserFeatures(_Response):
    user_id: str
    last_event_time: str | None
    event_count: int
    unknown_items: int
    realtime_mass: float
    categories: dict[str, float]
    recent: list[RecentEvent]
    session: Session
    model_version: str | None
    has_long_term_profile: bool


class ItemsAccepted(_Response):
    """What POST/PATCH/DELETE /items answer: the writes Kafka acknowledged (the dataflow
    folds them into the catalogue within moments)."""

    accepted: int
    item_ids: list[str]


class MarkerPosition(_Response):
    topic: str
    partition: int
    offset: int


class Erasure(_Response):
    user_id: str
    marker: MarkerPosition
    removed_user_state: bool
    removed_profiles: list[str]


class HeldOut(_Response):
    recall_at_10: float | None = None
    ndcg_at_10: float | None = None
    users_evaluated: int | None = None
    popularity_recall_at_10: float | None = None
    popularity_ndcg_at_10: float | None = None
    session_hr_at_10: float | None = None


class ModelVersion(_Response):
    version: str
    created_at: str
    items: int
    profiles: int
    active: bool
    held_out: HeldOut
    metrics: dict[str, Any] = {}


class ModelsOverview(_Response):
    active: str | None
    serving: str | None
    models: list[ModelVersion]


class Health(_Response):
    status: str
    checks: dict[str, str] = {}
    failed: list[str] = []
