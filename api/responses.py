"""Response bodies of the REST API (they define the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.service import Result


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str
    categories: list[str]
    reasons: list[str] = Field(description="Why this item: the features that moved it up")
    score_breakdown: dict[str, float] | None = Field(
        None,
        description="With explain=true: `ann_similarity` (the raw ANN dot product) and each "
        "re-rank term's weighted contribution; `score` is the sum of the contributions.",
    )


class Recommendations(BaseModel):
    request_id: str = Field(
        description="The server's id of this response, also in the X-Request-ID header and the "
        "impression log (a client's X-Request-ID is only logged beside it)"
    )
    user_id: str
    model_version: str = Field(description="The one model version every item and vector came from")
    variant: str = Field(description="The ranking configuration (A/B variant) that served")
    strategy: Literal["personalized", "cold_start"]
    realtime_weight: float = Field(
        description="Share of the query vector from real-time events (rest: long-term profile)"
    )
    candidates: int = Field(description="Candidates retrieved before re-ranking")
    items: list[RecommendedItem]

    @classmethod
    def from_result(cls, result: Result, request_id: str, explain: bool = False) -> Recommendations:
        cat = result.catalog
        return cls(
            request_id=request_id,
            user_id=result.user_id,
            model_version=cat.version,
            variant=result.variant,
            strategy=result.strategy,
            realtime_weight=round(result.realtime_weight, 4),
            candidates=result.candidates,
            items=[
                RecommendedItem(
                    item_id=cat.items[r.row].item_id,
                    score=round(r.score, 5),
                    title=cat.items[r.row].title,
                    categories=cat.items[r.row].categories,
                    reasons=r.reasons,
                    score_breakdown=(
                        {
                            "ann_similarity": round(result.ann.get(r.row, 0.0), 5),
                            **{name: round(v, 5) for name, v in r.terms.items()},
                        }
                        if explain
                        else None
                    ),
                )
                for r in result.items
            ],
        )


class RecentEvent(BaseModel):
    item_id: str
    title: str | None
    event_type: str
    time: str


class Session(BaseModel):
    id: str | None
    start: str | None
    events: int


class UserFeatures(BaseModel):
    user_id: str
    last_event_time: str | None = Field(description="Time of the latest event folded")
    event_count: int
    unknown_items: int
    realtime_mass: float = Field(description="Decayed event weight behind the real-time vector")
    categories: dict[str, float] = Field(description="Share of decayed activity per category")
    recent: list[RecentEvent] = Field(description="Most recent first")
    session: Session
    model_version: str | None
    has_long_term_profile: bool


class Item(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    popularity: float
    model_version: str
    extra: dict[str, Any] = {}


class EventsAccepted(BaseModel):
    accepted: int


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(
        default={}, description="What each check found: the model version, 'ok', or the problem"
    )
    failed: list[str] = Field(default=[], description="The checks that keep it from being ready")


class ItemSummary(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    popularity: float = Field(description="Share of training interactions, log-scaled to [0, 1]")


class ItemPage(BaseModel):
    model_version: str
    total: int = Field(description="Items matching the query and filters, over all pages")
    offset: int
    items: list[ItemSummary] = Field(description="Best title match first, then most popular")


class CategoryCount(BaseModel):
    name: str
    items: int


class Categories(BaseModel):
    model_version: str
    categories: list[CategoryCount]


class KnownUser(BaseModel):
    user_id: str
    seen_items: int = Field(description="Items in the user's training history")


class KnownUsers(BaseModel):
    model_version: str
    total: int = Field(description="Users with a long-term profile in this model")
    offset: int
    users: list[KnownUser]


class ErasureMarkerPosition(BaseModel):
    topic: str
    partition: int
    offset: int


class UserErasure(BaseModel):
    user_id: str
    marker: ErasureMarkerPosition = Field(
        description="Where the erasure marker sits in the events topic: a replay of the "
        "topic ignores the user's events before it"
    )
    removed_user_state: bool = Field(
        description="The store held real-time features of the user, now deleted"
    )
    removed_profiles: list[str] = Field(
        description="Model versions that held a long-term profile of the user, now deleted"
    )
