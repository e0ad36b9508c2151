"""Input rules that match what can be read back: an id the event contract accepts can be
asked for through the API (percent-encoded), an id it refuses is refused with a reason at
``POST /events`` and dead-lettered by the dataflow; timestamps before the floor are
``too_old``; a vanishing real-time vector never personalises; trending counts only
catalogue items with enough distinct users."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.service import Recommender
from core.events import Event, InvalidEvent, ValidEvent, decode, validate
from core.fold import FoldParams, fold_event
from core.ranking import build_query, has_realtime_vector
from core.records import Profile
from core.settings import Settings
from core.state import Trend, UserState
from featurestore import FeatureStore
from infra.process import serve_in_thread
from infra.serve import build_app
from tests.helpers import isolated_settings, publish, wait_for
from tests.test_flow_logic import CATALOG, SETTINGS, T0, ev, message, run
from tests.test_poison import _produce, _read_all

FLOOR = SETTINGS.fold.min_timestamp.timestamp()
TRICKY_IDS = [
    "with space",
    "what?x=1&y=2",
    "hash#tag",
    "100%",
    "%2F",
    "...",
    "a.",
    "~tilde",
    "back\\slash",
    "Zoë 日本 😀",
    "x" * 256,
]


def accepts_id(value: str) -> bool:
    """Whether the contract takes ``value`` as a user id."""
    try:
        validate(Event("view", value, "i1", T0), {"view"}, T0, 300.0, min_ts=FLOOR)
    except InvalidEvent:
        return False
    return 1 <= len(value) <= 256


def check(raw: dict) -> ValidEvent:
    return validate(decode(json.dumps(raw).encode()), {"view"}, T0 + 10, 300.0, T0, min_ts=FLOOR)


# --- the contract ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "fragment"),
    [
        ("nul\x00", "U+0000"),
        ("new\nline", "U+000A"),
        ("rtl\u202eevil", "U+202E"),
        ("next\x85line", "U+0085"),
        ("no\u00a0break", "U+00A0"),
        ("a/b", "contains '/'"),
        ("/", "contains '/'"),
        (".", "path segment"),
        ("..", "path segment"),
    ],
)
def test_ids_that_could_not_be_read_back_are_refused_with_a_reason(user_id, fragment):
    for field in ("user_id", "item_id"):
        raw = {"event_type": "view", "user_id": "u", "item_id": "i", field: user_id}
        with pytest.raises(InvalidEvent) as e:
            check(raw)
        assert e.value.kind == "invalid_id"
        assert field in str(e.value) and fragment in str(e.value)


def test_session_ids_are_shown_not_addressed_so_any_string_will_do():
    raw = {"event_type": "view", "user_id": "u", "item_id": "i", "session_id": "a/b\n"}
    assert check(raw).session_id == "a/b\n"


@pytest.mark.parametrize("value", TRICKY_IDS)
def test_printable_ids_are_accepted(value):
    assert check({"event_type": "view", "user_id": value, "item_id": value}).user_id == value


def test_ids_are_at_most_256_characters():
    with pytest.raises(InvalidEvent, match="length <= 256"):
        check({"event_type": "view", "user_id": "x" * 257, "item_id": "i"})


@pytest.mark.parametrize(
    "ts", [0, 1, 946684799, "1999-12-31T23:59:59Z", "1970-01-01T00:00:00+00:00"]
)
def test_timestamps_before_the_floor_are_too_old(ts):
    with pytest.raises(InvalidEvent) as e:
        check({"event_type": "view", "user_id": "u", "item_id": "i", "timestamp": ts})
    assert e.value.kind == "too_old" and "oldest accepted" in str(e.value)
    assert check({"event_type": "view", "user_id": "u", "item_id": "i", "timestamp": FLOOR}).ts


def test_the_floor_is_a_setting(monkeypatch):
    assert Settings(_env_file=None).fold.min_timestamp == datetime(2000, 1, 1, tzinfo=UTC)
    monkeypatch.setenv("RECSYS_FOLD_MIN_TIMESTAMP", "1995-06-01")  # no zone: UTC
    floor = Settings(_env_file=None).fold.min_timestamp
    assert floor == datetime(1995, 6, 1, tzinfo=UTC)
    e = Event("rating", "u", "i", 820454400.0)  # 1996: MovieLens-era
    assert validate(e, {"rating"}, T0, 300.0, min_ts=floor.timestamp()).ts == 820454400.0


def test_the_dataflow_dead_letters_refused_ids_and_old_events():
    bad = [ev("a/b", "i1", T0), ev("..", "i1", T0), ev("u", "i\u202e1", T0), ev("u", "i1", 0)]
    out = run([message(e, k) for k, e in enumerate([*bad, ev("ann", "i1", T0)])])
    kinds = [dict(d.headers)["dlq.kind"] for d in out.dead]
    assert kinds == [b"invalid_id", b"invalid_id", b"invalid_id", b"too_old"]
    assert [u for u, _ in out.users] == ["ann"]


# --- absent real-time vectors -----------------------------------------------------------


def _issue_case(now: float) -> UserState:
    """A known item 20,000 s before an unknown one (half-life 60 s): the fold leaves an
    all-zero float32 vector with a mass of ~3.6e-100."""
    params = FoldParams.from_settings(SETTINGS)
    s = UserState("pz", model_version="v1")
    i = CATALOG.index["i1"]
    old = ValidEvent("view", "pz", "i1", now - 20_000, None)
    fold_event(s, old, CATALOG.vectors[i], [], params, row=i)
    fold_event(s, ValidEvent("view", "pz", "ghost", now, None), None, [], params, row=None)
    return s


def test_a_vanishing_vector_counts_as_absent():
    now = T0
    s = _issue_case(now)
    assert s.vector is not None and not s.vector.any() and 0 < s.mass < 1e-90
    min_mass = SETTINGS.ranking.min_realtime_mass
    hl, blend = SETTINGS.fold.half_life_seconds, SETTINGS.ranking.blend_mass
    cold = build_query(s, None, CATALOG, now, hl, blend, min_mass)
    assert cold.vector is None and cold.realtime_weight == 0.0
    profile = Profile("pz", CATALOG.vectors[2] * 3, [])
    q = build_query(s, profile, CATALOG, now, hl, blend, min_mass)
    assert q.realtime_weight == 0.0
    np.testing.assert_allclose(q.vector, CATALOG.vectors[2], rtol=1e-5)


@pytest.mark.parametrize(
    ("vector", "mass", "present"),
    [
        ([1, 0, 0, 0, 0, 0, 0, 0], 1.0, True),
        ([1, 0, 0, 0, 0, 0, 0, 0], 1e-5, False),  # below min_realtime_mass (1e-4)
        ([0] * 8, 1.0, False),
        ([np.nan, 0, 0, 0, 0, 0, 0, 0], 1.0, False),
        ([np.inf, 0, 0, 0, 0, 0, 0, 0], 1.0, False),
        ([3e38] * 8, 1.0, False),  # its norm overflows float32: not finite either
        ([1, 0, 0, 0, 0, 0, 0, 0], math.inf, False),
        ([1, 0, 0, 0, 0, 0, 0, 0], math.nan, False),
        ([1, 0, 0, 0, 0, 0, 0, 0], 0.0, False),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_zero_non_finite_or_light_vectors_are_absent(vector, mass, present):
    s = UserState("u", vector=np.array(vector, np.float32), mass=mass, last_ts=T0)
    assert has_realtime_vector(s, SETTINGS.ranking.min_realtime_mass) is present
    q = build_query(s, None, CATALOG, T0, 60.0, 1.0, SETTINGS.ranking.min_realtime_mass)
    assert (q.vector is not None) is present
    if q.vector is not None:
        assert np.isfinite(q.vector).all()


# --- trending -------------------------------------------------------------------------


def test_unknown_items_and_lone_users_do_not_trend(tmp_path):
    spam = [ev("spammer", "no-such-item", T0 + k * 0.01) for k in range(3000)]
    real = [ev(u, "i1", T0 + k) for k, u in enumerate(("ann", "bob", "cem"))]
    real += [ev(u, "i2", T0 + 10 + k, "click") for k, u in enumerate(("ann", "bob", "cem", "dee"))]
    lone = [ev("eve", "i5", T0 + 20, "purchase")]
    out = run([message(e, k) for k, e in enumerate(spam + real + lone)])

    assert "no-such-item" not in {i for i, _ in out.trends}  # never counted, never written
    assert out.trend("i1").trending and out.trend("i2").trending
    i5 = out.trend("i5")
    assert not i5.trending and i5.score == 8.0 and i5.to_payload()["score"] == 0.0
    assert len(out.trend("i2").users) == SETTINGS.fold.trending_min_users  # bounded

    # What a user sees: the store's top trends and the service's trending scores.
    settings = isolated_settings(tmp_path / "var")
    store = FeatureStore.open(settings)
    try:
        publish(store, n=10, dim=8)
        latest = {i: t for i, t in out.trends}
        store.write_trends([*latest.values(), Trend("ghost", 1e9, T0)])  # a legacy count
        now = T0 + 30
        top = store.top_trends(100, now, SETTINGS.fold.trending_half_life_seconds)
        assert {t.item_id for t in top} == {"i1", "i2", "ghost"}
        catalogs = store.catalog_provider()
        catalog = catalogs.refresh()
        trending = Recommender(settings, store, catalogs).trending(catalog, now)
        by_item = {catalog.items[r].item_id: v for r, v in trending.items()}
        assert set(by_item) == {"i1", "i2"} and max(by_item.values()) == 1.0
        # trending turned off: the counts stored before are not read
        off = settings.with_values(trending_enabled=False)
        assert Recommender(off, store, catalogs).trending(catalog, now) == {}
    finally:
        store.close()


def test_trending_needs_the_users_since_the_item_last_went_quiet():
    half_life = SETTINGS.fold.trending_half_life_seconds
    times = {"ann": T0, "bob": T0 + 1.1 * half_life, "cem": T0 + 1.2 * half_life}
    slow = [ev(u, "i3", t) for u, t in times.items()]
    out = run([message(e, k) for k, e in enumerate(slow)])
    assert not out.trend("i3").trending  # ann's view was a half-life before the others
    assert len(out.trend("i3").users) == 2
    more = [*slow, ev("dee", "i3", times["cem"] + 1), ev("eve", "i3", times["cem"] + 2)]
    out = run([message(e, k) for k, e in enumerate(more)])
    assert out.trend("i3").trending  # bob, cem, dee
    assert len(out.trend("i3").users) == SETTINGS.fold.trending_min_users  # then no more


def test_trend_payloads_written_before_the_distinct_user_rule_still_read():
    old_payload = {
        "score": 2.0,
        "trend": json.dumps({"item_id": "i1", "ts": T0, "offsets": {"0": 3}, "log_id": None}),
    }
    assert Trend.from_payload(old_payload) == Trend("i1", 2.0, T0, {0: 3}, None)
    t = Trend("i1", 5.0, T0, {0: 3}, "A", [7, 8], trending=False)
    assert Trend.from_snapshot(t.to_snapshot()) == t and Trend.from_payload(t.to_payload()) == t


# --- through the API ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(broker, tmp_path_factory):
    """The API alone (no dataflow) under uvicorn, as served: routing and the contract at
    POST /events. (Starlette's TestClient decodes a path twice, so "%2500" would reach
    the app as a NUL: only a real server shows what a client gets.)"""
    cfg = isolated_settings(
        tmp_path_factory.mktemp("rules-api") / "var",
        broker,
        inprocess=False,
        access_log="off",
        impressions_enabled=False,
    )
    store = FeatureStore.open(cfg)
    publish(store, n=20, dim=8)
    store.close()
    with serve_in_thread(create_app(cfg)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _reaches_the_handler_intact(client: httpx.Client, user_id: str) -> None:
    path = quote(user_id, safe="")
    r = client.get(f"/users/{path}")
    assert r.status_code == 404, (user_id, r.status_code, r.text)
    assert r.json()["detail"] == f"no events folded and no profile for user {user_id!r} yet"
    r = client.get(f"/recommendations/{path}", params={"k": 2})
    assert r.status_code == 200, (user_id, r.status_code, r.text)
    assert r.json()["user_id"] == user_id


@pytest.mark.integration
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    user_id=st.text(alphabet=st.characters(exclude_characters="/"), min_size=1, max_size=256)
    | st.text(min_size=1, max_size=8)
    | st.sampled_from(TRICKY_IDS)
)
def test_every_accepted_id_can_be_asked_for_through_the_api(api, user_id):
    assume(accepts_id(user_id))
    _reaches_the_handler_intact(api, user_id)


@pytest.mark.integration
def test_post_events_refuses_unreadable_ids_and_old_events_with_422(api):
    for body, fragment in [
        ({"event_type": "view", "user_id": "a/b", "item_id": "i1"}, "contains '/'"),
        ({"event_type": "view", "user_id": "..", "item_id": "i1"}, "path segment"),
        ({"event_type": "view", "user_id": "u\x00", "item_id": "i1"}, "U+0000"),
        ({"event_type": "view", "user_id": "u", "item_id": "i\n"}, "U+000A"),
        ({"event_type": "view", "user_id": "u", "item_id": "i1", "timestamp": 0}, "oldest"),
    ]:
        r = api.post("/events", json=body)
        assert r.status_code == 422, body
        assert fragment in r.json()["detail"][0]["error"], r.json()


@pytest.fixture(scope="module")
def service(broker, tmp_path_factory):
    """The whole product in one process: API + in-process dataflow on the real broker."""
    cfg = isolated_settings(
        tmp_path_factory.mktemp("rules-e2e") / "var",
        broker,
        admin_keys={"admin-key"},
        write_keys={"write-key"},
        access_log="off",
    )
    store = FeatureStore.open(cfg)
    publish(store, n=30, dim=8, n_profiles=5)
    store.close()
    app = build_app(cfg)
    with (
        serve_in_thread(app, timeout=120) as url,
        httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": "admin-key"}) as c,
    ):
        yield cfg, c, app


def _posted(client: httpx.Client, events: list[dict]) -> None:
    for k in range(0, len(events), 1000):
        r = client.post("/events", json=events[k : k + 1000])
        assert r.status_code == 202, r.text


def _user(client: httpx.Client, user_id: str, count: int) -> dict:
    def folded():
        r = client.get(f"/users/{quote(user_id, safe='')}")
        return r.status_code == 200 and r.json()["event_count"] == count and r.json()

    return wait_for(folded, timeout=30)


@pytest.mark.integration
def test_tricky_ids_go_through_the_broker_and_read_back(service):
    _, client, _ = service
    _posted(client, [{"event_type": "view", "user_id": u, "item_id": "i3"} for u in TRICKY_IDS])
    for user_id in TRICKY_IDS:
        features = _user(client, user_id, 1)
        assert features["user_id"] == user_id
        r = client.get(f"/recommendations/{quote(user_id, safe='')}", params={"k": 3})
        assert r.status_code == 200 and r.json()["user_id"] == user_id
        assert r.json()["strategy"] == "personalized"


@pytest.mark.integration
def test_accepted_ids_can_be_erased(service):
    _, client, _ = service
    _posted(client, [{"event_type": "view", "user_id": u, "item_id": "i4"} for u in TRICKY_IDS])
    for user_id in TRICKY_IDS:
        path = quote(user_id, safe="")
        wait_for(lambda p=path: client.get(f"/users/{p}").status_code == 200, timeout=30)
        assert client.delete(f"/users/{path}").status_code < 300
        wait_for(lambda p=path: client.get(f"/users/{p}").status_code == 404, timeout=30)


@pytest.mark.integration
def test_the_dataflow_dead_letters_what_the_api_would_refuse(service):
    cfg, _, _ = service
    bodies = [
        json.dumps({"event_type": "view", "user_id": u, "item_id": "i1", "timestamp": T0}).encode()
        for u in ("a/b", "..", "x\u202e", "nl\n")
    ]
    bodies.append(
        json.dumps({"event_type": "view", "user_id": "u", "item_id": "i1", "timestamp": 0}).encode()
    )
    _produce(cfg, [b"k"] * len(bodies), bodies)
    dead = _read_all(cfg, cfg.kafka.dead_letter_topic, len(bodies))
    kinds = {m.value(): dict(m.headers())["dlq.kind"] for m in dead}
    assert kinds == dict(zip(bodies, [b"invalid_id"] * 4 + [b"too_old"], strict=True))
    assert all(dict(m.headers())["origin"] == b"test" for m in dead)  # the producer's header


@pytest.mark.integration
def test_a_vanishing_vector_is_served_as_cold_start_or_profile(service):
    _, client, _ = service
    now = time.time()
    for user_id in ("pz-new", "u2"):  # u2 has a long-term profile
        _posted(
            client,
            [
                {
                    "event_type": "view",
                    "user_id": user_id,
                    "item_id": "i1",
                    "timestamp": now - 20_000,
                },
                {"event_type": "view", "user_id": user_id, "item_id": "ghost", "timestamp": now},
            ],
        )
        _user(client, user_id, 2)
    cold = client.get("/recommendations/pz-new").json()
    assert cold["strategy"] == "cold_start" and cold["realtime_weight"] == 0.0
    known = client.get("/recommendations/u2").json()
    assert known["strategy"] == "personalized" and known["realtime_weight"] == 0.0


def _cold_scores(client: httpx.Client) -> dict[str, float]:
    """What a user with nothing to go on sees: each item's score (k = every item)."""
    body = client.get("/recommendations/nobody-yet", params={"k": 30}).json()
    assert body["strategy"] == "cold_start"
    return {i["item_id"]: i["score"] for i in body["items"]}


@pytest.mark.integration
def test_one_purchase_by_one_user_is_not_trending_now(service):
    """i5 (popularity 5/30) bought once by one user stays at its popularity's score, while
    i6, viewed by three users in the same second, rises above its own (6/30)."""
    cfg, client, _ = service
    _posted(
        client,
        [{"event_type": "purchase", "user_id": "lone", "item_id": "i5"}]
        + [{"event_type": "view", "user_id": f"v{k}", "item_id": "i6"} for k in range(3)],
    )
    assert wait_for(lambda: _cold_scores(client)["i6"] > 0.4 * 6 / 30 + 0.01, timeout=30)
    _user(client, "lone", 1)
    time.sleep(2 * cfg.dataflow.trend_emit_seconds + 1)  # written, and the cache renewed
    assert _cold_scores(client)["i5"] == pytest.approx(0.4 * 5 / 30, abs=1e-4)


@pytest.mark.integration
def test_spam_on_an_unknown_item_does_not_push_real_items_out_of_trending(service):
    """Before: the unknown item's count became the scale of every trending score, so a
    real item with 3 fresh users weighed ~nothing. Now it weighs its share of the real
    items' counts (items i0: new, popularity 0; score 0.2 + 0.4 * trending)."""
    _, client, _ = service
    now = time.time()
    spam = {"event_type": "purchase", "user_id": "spammer", "item_id": "spam-item"}
    _posted(client, [{**spam, "timestamp": now}] * 3000)
    _posted(client, [{"event_type": "view", "user_id": u, "item_id": "i0"} for u in ("t1", "t2")])
    _posted(client, [{"event_type": "view", "user_id": "t3", "item_id": "i0"}])
    _user(client, "spammer", 3000)
    assert wait_for(lambda: _cold_scores(client)["i0"] > 0.25, timeout=30)
