"""Response bodies of the REST API (they define the OpenAPI schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, Field

from api.service import Result
from core.catalog import Catalog
from core.ranking import Ranked

DECIMALS = 5
"""Decimals of the score terms in a response."""


def score_terms(r: Ranked) -> tuple[float, dict[str, float]]:
    """The item's score and its terms as a response shows them: each term rounded to
    ``DECIMALS`` and the score their float sum, in the order listed, so adding up the
    breakdown gives the score exactly (a score rounded on its own could differ from the
    terms' sum by a unit of the last decimal; this one at most by a float's last digit)."""
    terms = {name: round(v, DECIMALS) if v else v for name, v in r.terms.items()}  # 0 stays 0
    return sum(terms.values()), terms


def shown_score(r: Ranked) -> float:
    """``score_terms(r)[0]`` without the breakdown's dict (the same rounded terms, summed
    in the same order): the score of a response that does not list the breakdown."""
    return sum([round(v, DECIMALS) if v else v for v in r.terms.values()])


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="The sum, in their listed order, of the re-rank terms' weighted "
        f"contributions each rounded to {DECIMALS} decimals (the terms `score_breakdown` "
        "lists): adding them up gives the score exactly"
    )
    title: str
    categories: list[str]
    reasons: list[str] = Field(
        description="Why this item: its one or two terms that lifted it most against the "
        "other candidates"
    )
    score_breakdown: dict[str, float] | None = Field(
        None,
        description="With explain=true: each re-rank term's weighted contribution, once "
        "(`ann` is the ranking's ANN weight times the query-item cosine); the terms, added up "
        "in this order, equal `score` exactly.",
    )

    @classmethod
    def from_ranked(cls, r: Ranked, catalog: Catalog, explain: bool) -> RecommendedItem:
        score, terms = score_terms(r)
        item = catalog.items[r.row]
        return cls(
            item_id=item.item_id,
            score=score,
            title=item.title,
            categories=item.categories,
            reasons=r.reasons,
            score_breakdown=terms if explain else None,
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
            items=[RecommendedItem.from_ranked(r, cat, explain) for r in result.items],
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


_JSON = msgspec.json.Encoder()


def encode_recommendations(
    result: Result,
    request_id: str,
    explain: bool = False,
    scores: Sequence[float] | None = None,
) -> bytes:
    """The JSON of ``Recommendations.from_result(...)`` without ``None`` fields, built
    directly: the same keys in the same order and the same values, without a pydantic
    model per item on the request path (the models stay the documented schema).
    ``scores``: the items' ``shown_score``s, when the caller computed them already."""
    cat = result.catalog
    if scores is None:
        scores = [shown_score(r) for r in result.items]
    items = []
    for r, score in zip(result.items, scores, strict=True):
        item = cat.items[r.row]
        out = {
            "item_id": item.item_id,
            "score": score,
            "title": item.title,
            "categories": item.categories,
            "reasons": r.reasons,
        }
        if explain:
            out["score_breakdown"] = score_terms(r)[1]
        items.append(out)
    return _JSON.encode(
        {
            "request_id": request_id,
            "user_id": result.user_id,
            "model_version": cat.version,
            "variant": result.variant,
            "strategy": result.strategy,
            "realtime_weight": round(result.realtime_weight, 4),
            "candidates": result.candidates,
            "items": items,
        }
    )


class Item(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    popularity: float
    model_version: str
    extra: dict[str, Any] = {}


class EventsAccepted(BaseModel):
    accepted: int


class ItemsAccepted(BaseModel):
    accepted: int = Field(description="Catalogue writes Kafka acknowledged")
    item_ids: list[str] = Field(description="The items written, in the request's order")


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
