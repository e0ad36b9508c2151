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
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from api.model_watch import check_once, watch
from api.producer import EventProducer, ProducerUnavailable
from api.responses import (
    EventsAccepted,
    Health,
    Item,
    RecentEvent,
    Recommendations,
    Session,
    UserFeatures,
)
from api.service import NoModel, Recommender
from dataflow.events import EVENT_JSON_SCHEMA, InvalidEvent, decode_many, validate
from dataflow.fold import mass_at
from dataflow.runner import DataflowThread
from featurestore.backend import StoreError
from featurestore.catalog import CatalogProvider
from featurestore.schemas import iso
from featurestore.settings import Settings, get_settings
from featurestore.store import FeatureStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_EVENTS_PER_REQUEST = 1000

REQUEST_SECONDS = Histogram(
    "recsys_http_request_seconds",
    "HTTP request latency",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECOMMENDATIONS = Counter("recsys_recommendations_total", "Recommendation responses", ["strategy"])
EVENTS_ACCEPTED = Counter("recsys_api_events_accepted_total", "Events accepted by POST /events")
EVENTS_REJECTED = Counter("recsys_api_events_rejected_total", "Events rejected by POST /events")

UserId = Annotated[str, Path(min_length=1, max_length=256, description="Any user id string")]
ItemId = Annotated[str, Path(min_length=1, max_length=256)]


@dataclass
class Context:
    settings: Settings
    store: FeatureStore
    catalogs: CatalogProvider
    recommender: Recommender
    producer: EventProducer
    dataflow: DataflowThread | None


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
        if settings.inprocess_dataflow:
            flow = DataflowThread(settings, st, catalogs).start()
        producer = EventProducer(settings)
        app.state.ctx = Context(
            settings, st, catalogs, Recommender(settings, st, catalogs), producer, flow
        )
        watcher = asyncio.create_task(watch(settings, st, catalogs))
        log.info(
            "serving with %s store, dataflow %s",
            "embedded" if settings.embedded else f"server {settings.qdrant_url}",
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

    @app.middleware("http")
    async def timing(request: Request, call_next):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(
            getattr(route, "path", "unmatched"), request.method, str(response.status_code)
        ).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(NoModel)
    async def no_model(_: Request, e: NoModel) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, e: StoreError) -> JSONResponse:
        log.error("feature store error: %s", e)
        return JSONResponse({"detail": f"feature store unavailable: {e}"}, status_code=503)

    @app.exception_handler(ProducerUnavailable)
    async def producer_down(_: Request, e: ProducerUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.get("/recommendations/{user_id}", response_model=Recommendations, tags=["recommend"])
    def recommendations(
        request: Request,
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=settings.max_k, description="How many items")] = 10,
    ) -> Recommendations:
        """Top-k items for a user from their real-time and long-term vectors, re-ranked on
        session features. Unknown users get trending and popular items (cold start)."""
        result = ctx(request).recommender.recommend(user_id, k)
        RECOMMENDATIONS.labels(result.strategy).inc()
        return Recommendations.from_result(result)

    @app.get("/users/{user_id}", response_model=UserFeatures, tags=["features"])
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
            realtime_mass=round(mass_at(state, now, c.settings.half_life_seconds), 6),
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

    @app.get("/items/{item_id}", response_model=Item, tags=["features"])
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

    @app.post(
        "/events",
        status_code=202,
        response_model=EventsAccepted,
        tags=["events"],
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
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
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
        types = c.settings.event_weights.keys()
        valid, errors = [], []
        for i, e in enumerate(events):
            try:
                valid.append(
                    validate(e, types, now, c.settings.max_future_seconds, fallback_ts=now)
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

    _add_event_schema(app)
    return app


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
