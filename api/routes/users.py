"""Users: one user's real-time features (GET /users/{user_id}) and the users with a
long-term profile, worth trying in a demo (GET /users)."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException

from api.browse import USERS_LISTED
from api.deps import BrowserDep, CatalogsDep, SettingsDep, StoreDep, require_read
from api.params import Limit, Offset, UserId
from api.responses import KnownUser, KnownUsers, RecentEvent, Session, UserFeatures
from core.catalog import Catalog
from core.fold import mass_at
from core.records import iso
from core.state import UserState

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
