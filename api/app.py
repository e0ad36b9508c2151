"""The REST service.

    uvicorn --factory api.app:create_app

With the embedded store (no RECSYS_QDRANT_URL) the app also runs the dataflow in a
background thread, because only one process may open the store. With a Qdrant server
it only serves, and the dataflow runs as its own Bytewax process(es).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from api.browse import USERS_LISTED, Browser, category_counts
from api.demo import add_demo_page
from api.impressions import ImpressionLog
from api.model_watch import check_once, watch
from api.model_watch import refresh as refresh_catalog
from api.observability import RequestContext
from api.responses import (
    Categories,
    CategoryCount,
    EventsAccepted,
    Health,
    Item,
    ItemPage,
    ItemSummary,
    KnownUser,
    KnownUsers,
    RecentEvent,
    Recommendations,
    Session,
    UserFeatures,
)
from api.security import require_key
from api.service import NoModel, Recommender, UnknownCategory
from core.catalog import CatalogProvider
from core.events import EVENT_JSON_SCHEMA, InvalidEvent, decode_many, validate
from core.fold import mass_at
from core.records import iso
from core.settings import Settings, get_settings
from dataflow.runner import DataflowThread
from eventlog.producer import EventProducer, ProducerUnavailable
from featurestore.backend import ItemFilter, StoreError
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

MAX_EVENTS_PER_REQUEST = 1000
MAX_CATEGORY_CHARS = 100
MAX_QUERY_CHARS = 200
MAX_PAGE_ITEMS = 100

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
EVENTS_ACCEPTED = Counter("recsys_api_events_accepted_total", "Events accepted by POST /events")
EVENTS_REJECTED = Counter("recsys_api_events_rejected_total", "Events rejected by POST /events")

# Ids are any printable string (no control characters), at most 256 characters.
_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
UserId = Annotated[
    str, Path(min_length=1, max_length=256, pattern=_ID_PATTERN, description="Any user id string")
]
ItemId = Annotated[str, Path(min_length=1, max_length=256, pattern=_ID_PATTERN)]
Version = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class PublishRequest(BaseModel):
    version: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="A trained version under the model directory; default: LATEST",
    )
    activate: bool = Field(True, description="Make it live once written")


@dataclass
class Context:
    settings: Settings
    store: FeatureStore
    catalogs: CatalogProvider
    recommender: Recommender
    producer: EventProducer
    dataflow: DataflowThread | None
    browser: Browser
    impressions: ImpressionLog | None = None


def create_app(settings: Settings | None = None, store: FeatureStore | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = store or await asyncio.to_thread(FeatureStore.open, settings)
        catalogs = st.catalog_provider()
        try:
            await asyncio.to_thread(check_once, settings, st, catalogs)
        except Exception:
            log.exception("could not load a model at start-up; serving will wait for one")
        flow = None
        if settings.dataflow.inprocess:
            flow = DataflowThread(settings, st, catalogs).start()
        producer = EventProducer(settings)
        impressions = ImpressionLog(settings).start() if settings.api.impressions_enabled else None
        recommender = Recommender(settings, st, catalogs)
        app.state.ctx = Context(
            settings,
            st,
            catalogs,
            recommender,
            producer,
            flow,
            browser=Browser(recommender.catalog, st),
            impressions=impressions,
        )
        watcher = asyncio.create_task(watch(settings, st, catalogs))
        log.info(
            "serving with %s store, dataflow %s",
            "embedded" if settings.embedded else f"server {settings.qdrant.url}",
            "in-process" if flow else "elsewhere",
        )
        try:
            yield
        finally:
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            if flow is not None:
                await asyncio.to_thread(flow.stop)
            producer.close()
            if impressions is not None:
                await asyncio.to_thread(impressions.close)
            if store is None:
                st.close()
            log.info("stopped cleanly")

    app = FastAPI(
        title="Real-time recommendations",
        version="0.1.0",
        description="Recommendations that react to a user's last events within a second.",
        lifespan=lifespan,
    )

    def ctx(request: Request) -> Context:
        return request.app.state.ctx  # type: ignore[no-any-return]

    app.add_middleware(
        RequestContext,
        max_body=settings.api.max_request_bytes,
        log_mode=settings.api.access_log,
        slow_ms=settings.api.access_log_slow_ms,
    )
    read_key = [Depends(require_key(settings, "read"))]
    write_key = [Depends(require_key(settings, "write"))]
    admin_key = [Depends(require_key(settings, "admin"))]

    @app.exception_handler(NoModel)
    async def no_model(_: Request, e: NoModel) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, e: StoreError) -> JSONResponse:
        log.error("feature store error: %s", e)
        return JSONResponse({"detail": f"feature store unavailable: {e}"}, status_code=503)

    @app.exception_handler(UnknownCategory)
    async def unknown_category(_: Request, e: UnknownCategory) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(ProducerUnavailable)
    async def producer_down(_: Request, e: ProducerUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    variant_names = sorted(settings.ranking.variants)

    @app.get(
        "/recommendations/{user_id}",
        response_model=Recommendations,
        response_model_exclude_none=True,
        tags=["recommend"],
        dependencies=read_key,
    )
    async def recommendations(
        request: Request,
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=settings.api.max_k, description="How many items")] = 10,
        category: Annotated[
            list[str] | None,
            Query(description="Only items in at least one of these categories (repeatable)"),
        ] = None,
        exclude_category: Annotated[
            list[str] | None, Query(description="No items in any of these categories")
        ] = None,
        available_only: Annotated[
            bool, Query(description="Leave out items whose `available` payload is false")
        ] = True,
        exclude_seen: Annotated[
            bool, Query(description="Leave out items the user interacted with")
        ] = True,
        explain: Annotated[
            bool, Query(description="Add each item's score breakdown (ANN, re-rank terms)")
        ] = False,
        diversity: Annotated[
            float | None,
            Query(
                ge=0,
                le=1,
                description="Maximal marginal relevance: 0 = pure relevance, higher = fewer "
                "similar items in one list (default: 1 - RECSYS_RANKING_MMR_LAMBDA, i.e. 0)",
            ),
        ] = None,
        variant: Annotated[
            str | None,
            Query(
                description=f"Force a ranking variant (default: the user's bucket); one of {variant_names}"
            ),
        ] = None,
    ) -> Response:
        """Top-k items for a user from their real-time and long-term vectors, re-ranked on
        session features. Unknown users get trending and popular items (cold start).
        Filters apply inside the ANN search, so they never starve the result."""
        # Embedded: runs on the event loop, not in the threadpool: the work is ~1 ms of CPU
        # under the GIL either way, and the hop to a worker thread cost more than it saved
        # (GIL hand-offs between the loop and the worker; see docs/benchmarks.md).
        c = ctx(request)
        if variant is not None and variant not in c.recommender.variants:
            raise HTTPException(422, f"unknown variant {variant!r}; one of {variant_names}")
        item_filter = ItemFilter(
            _categories(category, "category", settings.api.max_filter_categories),
            _categories(exclude_category, "exclude_category", settings.api.max_filter_categories),
            available_only,
        )
        t0 = time.perf_counter()
        recommend = partial(
            c.recommender.recommend,
            user_id,
            k,
            item_filter=item_filter,
            exclude_seen=exclude_seen,
            variant=variant,
            mmr_lambda=None if diversity is None else 1.0 - diversity,
        )
        # A Qdrant server answers over the network: wait for it in the threadpool so the
        # event loop keeps serving other requests meanwhile.
        result = recommend() if settings.embedded else await run_in_threadpool(recommend)
        RECOMMEND_SECONDS.labels(result.variant).observe(time.perf_counter() - t0)
        version = result.catalog.version
        RECOMMENDATIONS.labels(result.strategy, result.variant, version).inc()
        CANDIDATES.observe(result.candidates)
        RESULT_ITEMS.observe(len(result.items))
        request_id = request.state.request_id
        if c.impressions is not None:
            items = result.catalog.items
            c.impressions.log(
                request_id,
                user_id,
                [items[r.row].item_id for r in result.items],
                [r.score for r in result.items],
                version,
                result.variant,
                result.strategy,
            )
        body = Recommendations.from_result(result, request_id, explain)
        # Serialised once here: returning the model would make FastAPI validate it again.
        return Response(body.model_dump_json(exclude_none=True), media_type="application/json")

    @app.get(
        "/users/{user_id}", response_model=UserFeatures, tags=["features"], dependencies=read_key
    )
    def user_features(request: Request, user_id: UserId) -> UserFeatures:
        """The real-time features the dataflow stored for a user."""
        c = ctx(request)
        catalog = c.catalogs.current
        state = c.store.read_user_state(user_id)
        has_profile = (
            catalog is not None and c.store.read_profile(catalog.version, user_id) is not None
        )
        if state is None and not has_profile:
            raise HTTPException(404, f"no events folded and no profile for user {user_id!r} yet")
        now = time.time()
        if state is None:
            return UserFeatures(
                user_id=user_id,
                last_event_time=None,
                event_count=0,
                unknown_items=0,
                realtime_mass=0.0,
                categories={},
                recent=[],
                session=Session(id=None, start=None, events=0),
                model_version=None,
                has_long_term_profile=True,
            )
        total = sum(state.categories.values()) or 1.0
        return UserFeatures(
            user_id=user_id,
            last_event_time=iso(state.last_ts),
            event_count=state.event_count,
            unknown_items=state.unknown_items,
            realtime_mass=round(mass_at(state, now, c.settings.fold.half_life_seconds), 6),
            categories={
                k: round(v / total, 4)
                for k, v in sorted(state.categories.items(), key=lambda kv: -kv[1])
            },
            recent=[
                RecentEvent(
                    item_id=r.item_id,
                    title=catalog.title(r.item_id)
                    if catalog and r.item_id in catalog.index
                    else None,
                    event_type=r.event_type,
                    time=iso(r.ts) or "",
                )
                for r in reversed(state.recent)
            ],
            session=Session(
                id=state.session_id,
                start=iso(state.session_start) if state.session_id else None,
                events=state.session_events,
            ),
            model_version=state.model_version,
            has_long_term_profile=has_profile,
        )

    @app.get("/items/{item_id}", response_model=Item, tags=["features"], dependencies=read_key)
    def item(request: Request, item_id: ItemId) -> Item:
        catalog = ctx(request).recommender.catalog()
        row = catalog.index.get(item_id)
        if row is None:
            raise HTTPException(404, f"item {item_id!r} is not in model {catalog.version}")
        it = catalog.items[row]
        return Item(
            item_id=it.item_id,
            title=it.title,
            categories=it.categories,
            popularity=it.popularity,
            model_version=catalog.version,
            extra=it.extra,
        )

    @app.get("/items", response_model=ItemPage, tags=["features"], dependencies=read_key)
    def items(
        request: Request,
        q: Annotated[
            str | None,
            Query(max_length=MAX_QUERY_CHARS, description="Words to find in item titles"),
        ] = None,
        category: Annotated[
            list[str] | None,
            Query(description="Only items in at least one of these categories (repeatable)"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS)] = 24,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> ItemPage:
        """Browse or search the live model's items: title search (case and accents
        ignored; every word must occur) ranked by match quality, then popularity."""
        b = ctx(request).browser
        wanted = _categories(category, "category", settings.api.max_filter_categories)
        catalog, rows, total = b.search(q, wanted, limit, offset)  # unknown category: 422
        return ItemPage(
            model_version=catalog.version,
            total=total,
            offset=offset,
            items=[
                ItemSummary(
                    item_id=(it := catalog.items[row]).item_id,
                    title=it.title,
                    categories=it.categories,
                    popularity=round(it.popularity, 4),
                )
                for row in rows
            ],
        )

    @app.get("/categories", response_model=Categories, tags=["features"], dependencies=read_key)
    def categories(request: Request) -> Categories:
        """Every category of the live model, with its number of items."""
        catalog = ctx(request).recommender.catalog()
        return Categories(
            model_version=catalog.version,
            categories=[CategoryCount(name=n, items=c) for n, c in category_counts(catalog)],
        )

    @app.get(
        "/users",
        response_model=KnownUsers,
        tags=["features"],
        dependencies=read_key,
        description="Users with a long-term profile in the live model, in id order (from "
        f"the first {USERS_LISTED:,} stored): ones whose recommendations start personalised. "
        "Any other id works too, as a new user.",
    )
    def users(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS)] = 10,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> KnownUsers:
        version, found, total = ctx(request).browser.users(limit, offset)
        return KnownUsers(
            model_version=version,
            total=total,
            offset=offset,
            users=[KnownUser(user_id=u, seen_items=n) for u, n in found],
        )

    @app.post(
        "/events",
        status_code=202,
        response_model=EventsAccepted,
        tags=["events"],
        dependencies=write_key,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Event"},
                                {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                            ]
                        }
                    }
                },
            }
        },
    )
    async def post_events(request: Request) -> EventsAccepted:
        """Accept one event or a JSON list of events and produce them to Kafka.

        All-or-nothing: if any event is invalid, none is produced and the 422 lists
        every problem with its index. A missing timestamp means "now"."""
        c = ctx(request)
        body = await request.body()  # RequestContext refuses bodies over max_request_bytes
        try:
            events = decode_many(body)
        except InvalidEvent as e:
            EVENTS_REJECTED.inc()
            raise HTTPException(422, [{"index": None, "error": str(e)}]) from None
        if not events:
            raise HTTPException(422, [{"index": None, "error": "no events in the request"}])
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise HTTPException(413, f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        now = time.time()
        types = c.settings.fold.event_weights.keys()
        valid, errors = [], []
        for i, e in enumerate(events):
            try:
                valid.append(
                    validate(e, types, now, c.settings.fold.max_future_seconds, fallback_ts=now)
                )
            except InvalidEvent as err:
                errors.append({"index": i, "error": str(err)})
        if errors:
            EVENTS_REJECTED.inc(len(errors))
            raise HTTPException(422, errors)
        await run_in_threadpool(c.producer.send, valid)
        EVENTS_ACCEPTED.inc(len(valid))
        return EventsAccepted(accepted=len(valid))

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["ops"])
    def readyz(request: Request) -> JSONResponse:
        """Ready to serve: a model is loaded and, when in-process, the dataflow runs."""
        c = ctx(request)
        catalog = c.catalogs.current
        checks = {"model": catalog.version if catalog else "none published"}
        ok = catalog is not None
        if c.dataflow is not None:
            checks["dataflow"] = c.dataflow.status
            ok = ok and c.dataflow.running.is_set()
        body = Health(status="ready" if ok else "not ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (API and, when in-process, dataflow)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # --- admin (needs an admin key) ---------------------------------------------------

    def _models(c: Context) -> dict:  # type: ignore[type-arg]
        serving = c.catalogs.current
        return c.store.models_overview(serving.version if serving else None)

    @app.get("/admin/models", tags=["admin"], dependencies=admin_key)
    def admin_models(request: Request) -> dict:  # type: ignore[type-arg]
        """Published versions, the active one, and the one this process serves."""
        return _models(ctx(request))

    @app.post("/admin/models/publish", tags=["admin"], dependencies=admin_key)
    def admin_publish(
        request: Request, body: Annotated[PublishRequest | None, Body()] = None
    ) -> dict:  # type: ignore[type-arg]
        """Write a trained version (default: LATEST in the model directory) to the store
        beside the live one and, unless activate=false, switch serving to it. Requests in
        flight finish on the version they started with."""
        from core.artifacts import latest_version
        from featurestore.publish import publish_model_dir

        c = ctx(request)
        body = body or PublishRequest()
        assert settings.model_dir is not None
        version = body.version or latest_version(settings.model_dir)
        if version is None or not (settings.model_dir / version).is_dir():
            raise HTTPException(404, f"no trained model {version!r} under {settings.model_dir}")
        try:
            publish_model_dir(c.store, settings.model_dir / version, activate=body.activate)
        except StoreError as e:
            raise HTTPException(409, str(e)) from None
        refresh_catalog(c.catalogs)
        return _models(c)

    @app.post("/admin/models/{version}/activate", tags=["admin"], dependencies=admin_key)
    def admin_activate(request: Request, version: Version) -> dict:  # type: ignore[type-arg]
        """Make a published version live (a rollback is activating an older one)."""
        c = ctx(request)
        if c.store.model(version) is None:
            raise HTTPException(404, f"model {version!r} is not published")
        c.store.activate(version)
        refresh_catalog(c.catalogs)
        return _models(c)

    @app.post("/admin/reload", tags=["admin"], dependencies=admin_key)
    def admin_reload(request: Request) -> dict:  # type: ignore[type-arg]
        """Check for a new model now instead of at the next poll."""
        c = ctx(request)
        check_once(settings, c.store, c.catalogs)
        return _models(c)

    add_demo_page(app)
    _add_event_schema(app)
    return app


def _categories(values: list[str] | None, name: str, limit: int) -> tuple[str, ...]:
    if not values:
        return ()
    if len(values) > limit:
        raise HTTPException(422, f"at most {limit} values of {name}")
    for v in values:
        if not 0 < len(v) <= MAX_CATEGORY_CHARS:
            raise HTTPException(
                422, f"{name} values must have 1 to {MAX_CATEGORY_CHARS} characters"
            )
    return tuple(dict.fromkeys(values))


def _add_event_schema(app: FastAPI) -> None:
    """Put the msgspec event schema (the one the dataflow validates with) into OpenAPI."""
    original = app.openapi

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        defs = EVENT_JSON_SCHEMA.get("$defs", {})
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
