"""GET /recommendations/{user_id}: the top-k for a user, re-ranked, with its metrics and
its impression."""

# No ``from __future__ import annotations``: the route's parameter types are built in
# ``build_router`` (per settings), where FastAPI could not resolve them from strings.
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import Counter, Histogram

from api.deps import ResourcesDep, require_read
from api.impressions import ImpressionLog
from api.params import CategoryFilter, UserId, checked_categories
from api.responses import Recommendations, encode_recommendations, shown_score
from api.service import Result
from core.settings import Settings
from featurestore.backend import ItemFilter

RECOMMENDATIONS = Counter(
    "recsys_recommendations_total",
    "Recommendation responses per strategy, A/B variant and model version served",
    ["strategy", "variant", "model_version"],
)
RECOMMEND_SECONDS = Histogram(
    "recsys_recommend_seconds",
    "Time to compute a recommendation (features, ANN, re-rank) per A/B variant",
    ["variant"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
CANDIDATES = Histogram(
    "recsys_candidates",
    "Candidates retrieved before re-ranking, per request",
    buckets=(0, 10, 25, 50, 100, 200, 300, 500, 1000, 5000),
)
RESULT_ITEMS = Histogram(
    "recsys_recommended_items",
    "Items returned per response (fewer than k when filters leave too few)",
    buckets=(0, 1, 5, 10, 20, 50, 100),
)

ExcludeCategories = Annotated[
    list[str] | None, Query(description="No items in any of these categories")
]
AvailableOnly = Annotated[
    bool, Query(description="Leave out items whose `available` payload is false")
]
ExcludeSeen = Annotated[bool, Query(description="Leave out items the user interacted with")]
Explain = Annotated[
    bool,
    Query(
        description="Add each item's score breakdown: each re-rank term once, adding up to the score"
    ),
]
Diversity = Annotated[
    float | None,
    Query(
        ge=0,
        le=1,
        description="Maximal marginal relevance: 0 = pure relevance, higher = fewer "
        "similar items in one list (default: 1 - RECSYS_RANKING_MMR_LAMBDA, i.e. 0)",
    ),
]


def build_router(settings: Settings) -> APIRouter:
    """Built per settings: the parameters' schema states the largest k and the ranking
    variants this deployment has."""
    variant_names = sorted(settings.ranking.variants)
    K = Annotated[int, Query(ge=1, le=settings.api.max_k, description="How many items")]
    Variant = Annotated[
        str | None,
        Query(
            description="Force a ranking variant (default: the user's bucket); "
            f"one of {variant_names}"
        ),
    ]
    router = APIRouter(tags=["recommend"], dependencies=[require_read])

    @router.get(
        "/recommendations/{user_id}",
        response_model=Recommendations,
        response_model_exclude_none=True,
    )
    async def recommendations(
        request: Request,
        user_id: UserId,
        resources: ResourcesDep,
        k: K = 10,
        category: CategoryFilter = None,
        exclude_category: ExcludeCategories = None,
        available_only: AvailableOnly = True,
        exclude_seen: ExcludeSeen = True,
        explain: Explain = False,
        diversity: Diversity = None,
        variant: Variant = None,
    ) -> Response:
        """Top-k items for a user from their real-time and long-term vectors, re-ranked on
        session features. Unknown users get trending and popular items (cold start).
        Filters apply inside the ANN search, so they never starve the result."""
        # One dependency on the hot path (FastAPI resolves each one on every request);
        # the settings are the ones this router was built with.
        if variant is not None and variant not in resources.recommender.variants:
            raise HTTPException(422, f"unknown variant {variant!r}; one of {variant_names}")
        recommend = partial(
            resources.recommender.recommend,
            user_id,
            k,
            item_filter=build_item_filter(settings, category, exclude_category, available_only),
            exclude_seen=exclude_seen,
            variant=variant,
            mmr_lambda=None if diversity is None else 1.0 - diversity,
        )
        result = await _timed(recommend, settings.embedded)
        request_id = request.state.request_id
        scores = [shown_score(r) for r in result.items]  # logged and shown
        if resources.impressions is not None:
            _log_impression(resources.impressions, request_id, result, scores)
        # Encoded here with msgspec: returning the model would make FastAPI validate it
        # again; ``Recommendations`` stays the documented schema of the same JSON.
        body = encode_recommendations(result, request_id, explain, scores)
        return Response(body, media_type="application/json")

    return router


async def _timed(recommend: Callable[[], Result], embedded: bool) -> Result:
    """Run ``recommend`` and record its time, candidates and result in the metrics."""
    t0 = time.perf_counter()
    # Embedded: on the event loop, not in the threadpool: the work is ~1 ms of CPU
    # under the GIL either way, and the hop to a worker thread cost more than it saved
    # (GIL hand-offs between the loop and the worker; see docs/benchmarks.md).
    # A Qdrant server answers over the network: wait for it in the threadpool so the
    # event loop keeps serving other requests meanwhile.
    result = recommend() if embedded else await run_in_threadpool(recommend)
    seconds = time.perf_counter() - t0
    RECOMMEND_SECONDS.labels(result.variant).observe(seconds)
    RECOMMENDATIONS.labels(result.strategy, result.variant, result.catalog.version).inc()
    CANDIDATES.observe(result.candidates)
    RESULT_ITEMS.observe(len(result.items))
    return result


def build_item_filter(
    settings: Settings,
    category: list[str] | None,
    exclude_category: list[str] | None,
    available_only: bool,
) -> ItemFilter:
    limit = settings.api.max_filter_categories
    return ItemFilter(
        checked_categories(category, "category", limit),
        checked_categories(exclude_category, "exclude_category", limit),
        available_only,
    )


def _log_impression(
    impressions: ImpressionLog, request_id: str, result: Result, scores: list[float]
) -> None:
    items = result.catalog.items
    impressions.log(
        request_id,
        result.user_id,
        [items[r.row].item_id for r in result.items],
        scores,  # the scores the response shows
        result.catalog.version,
        result.variant,
        result.strategy,
    )
