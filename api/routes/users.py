"""Users: one user's real-time features (GET /users/{user_id}), the users with a
long-term profile, worth trying in a demo (GET /users), and a user's erasure
(DELETE /users/{user_id})."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, HTTPException

from api.browse import USERS_LISTED
from api.deps import (
    BrowserDep,
    CatalogsDep,
    ProducerDep,
    SettingsDep,
    StoreDep,
    require_admin,
    require_read,
)
from api.params import Limit, Offset, UserId
from api.responses import (
    ErasureMarkerPosition,
    KnownUser,
    KnownUsers,
    RecentEvent,
    Session,
    UserErasure,
    UserFeatures,
)
from core.catalog import Catalog
from core.fold import mass_at
from core.records import iso
from core.state import UserState
from featurestore.store import ErasureRecord

log = logging.getLogger(__name__)

router = APIRouter(tags=["features"], dependencies=[require_read])


@router.get("/users/{user_id}", response_model=UserFeatures)
def user_features(
    user_id: UserId, settings: SettingsDep, store: StoreDep, catalogs: CatalogsDep
) -> UserFeatures:
    """The real-time features the dataflow stored for a user."""
    catalog = catalogs.current
    state = store.read_user_state(user_id)
    has_profile = catalog is not None and store.read_profile(catalog.version, user_id) is not None
    if state is None and not has_profile:
        raise HTTPException(404, f"no events folded and no profile for user {user_id!r} yet")
    if state is None:
        return _profile_only(user_id)
    mass = mass_at(state, time.time(), settings.fold.half_life_seconds)
    return _features(user_id, state, catalog, round(mass, 6), has_profile)


def _profile_only(user_id: str) -> UserFeatures:
    """A user with a long-term profile and no event folded yet."""
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


def _features(
    user_id: str, state: UserState, catalog: Catalog | None, mass: float, has_profile: bool
) -> UserFeatures:
    total = sum(state.categories.values()) or 1.0
    return UserFeatures(
        user_id=user_id,
        last_event_time=iso(state.last_ts),
        event_count=state.event_count,
        unknown_items=state.unknown_items,
        realtime_mass=mass,
        categories={
            k: round(v / total, 4)
            for k, v in sorted(state.categories.items(), key=lambda kv: -kv[1])
        },
        recent=[
            RecentEvent(
                item_id=r.item_id,
                title=catalog.title(r.item_id) if catalog and r.item_id in catalog.index else None,
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


@router.delete(
    "/users/{user_id}",
    response_model=UserErasure,
    tags=["admin"],
    dependencies=[require_admin],
    responses={503: {"description": "Kafka did not take the erasure marker: nothing erased"}},
)
def erase_user(
    user_id: UserId,
    settings: SettingsDep,
    store: StoreDep,
    producer: ProducerDep,
    browser: BrowserDep,
) -> UserErasure:
    """Erase a user (GDPR Art. 17; admin key): their real-time features, their long-term
    profile in every model version and the state the dataflow holds.

    First an erasure marker goes to the events topic (keyed by the user, acknowledged),
    so the dataflow drops the user when it reads it and a replay of the topic ignores the
    user's events before it; then the store records the erasure and deletes the user's
    points. Idempotent: erasing an unknown or already erased user answers 200 as well
    (events still on their way to the dataflow are erased too). Events sent after it
    start a new user."""
    held = store.user_points(user_id)  # the flow may delete them first, once the marker is in
    sent = producer.erase(user_id)
    record = ErasureRecord.at(sent.marker, sent.partition, sent.offset, sent.log_id)
    store.erase_user(user_id, record)
    browser.forget_user(user_id)
    log.info(
        "erased a user: marker at %s/%d@%d",
        settings.kafka.events_topic,
        sent.partition,
        sent.offset,
    )
    return UserErasure(
        user_id=user_id,
        marker=ErasureMarkerPosition(
            topic=settings.kafka.events_topic, partition=sent.partition, offset=sent.offset
        ),
        removed_user_state=held.user_state,
        removed_profiles=held.profiles,
    )


@router.get(
    "/users",
    response_model=KnownUsers,
    description="Users with a long-term profile in the live model, in id order (from "
    f"the first {USERS_LISTED:,} stored): ones whose recommendations start personalised. "
    "Any other id works too, as a new user.",
)
def users(browser: BrowserDep, limit: Limit = 10, offset: Offset = 0) -> KnownUsers:
    version, found, total = browser.users(limit, offset)
    return KnownUsers(
        model_version=version,
        total=total,
        offset=offset,
        users=[KnownUser(user_id=u, seen_items=n) for u, n in found],
    )
