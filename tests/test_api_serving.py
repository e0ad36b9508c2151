"""Serving at production grade: keys, limits, filters, explanations, A/B variants,
impressions on Kafka, request ids, metrics, and a model swap under load."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from api.app import create_app
from api.impressions import decode_impression
from core.state import RecentItem, UserState
from core.variants import bucket
from featurestore import FeatureStore
from infra.serve import build_app
from tests.helpers import isolated_settings, make_model, publish, wait_for, write_model_dir

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "admin-secret"}
WRITE = {"X-API-Key": "write-secret"}
VARIANTS = {
    "control": {},
    "recent_only": {"weight_ann": 0.0, "weight_category": 0.0, "weight_popularity": 0.0},
}


@pytest.fixture(scope="module")
def svc(broker, tmp_path_factory):
    settings = isolated_settings(
        tmp_path_factory.mktemp("serving") / "var",
        broker,
        write_keys={"write-secret"},
        admin_keys={"admin-secret"},
        variants=VARIANTS,
        max_request_bytes=4096,
        impressions_topic=f"impressions-{time.time_ns()}",
        auto_publish_latest=False,  # the admin test publishes LATEST itself
    )
    store = FeatureStore.open(settings)
    record, items, vecs, profiles = make_model("v1", n=200, dim=16, n_profiles=20)
    for i, it in enumerate(items):
        it.extra["available"] = i % 5 != 0
    store.publish_model(record, items, vecs, profiles)
    store.activate("v1")
    now = time.time()
    # u-rt: real-time state on two Sci-Fi items, so "recent" separates the variants.
    state = UserState(
        "u-rt",
        vector=vecs[1] + vecs[3],
        mass=2.0,
        last_ts=now - 60,
        categories={"Sci-Fi": 2.0},
        recent=[RecentItem("i1", now - 120, "view"), RecentItem("i3", now - 60, "view")],
        event_count=2,
        model_version="v1",
    )
    store.write_user_states([state])
    app = build_app(settings, store=store)  # the dataflow in-process, on this store
    with TestClient(app) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200)
        yield c, settings, store
    store.close()


def test_writes_and_admin_need_keys_reads_are_open(svc):
    c, _, _ = svc
    ev = {"event_type": "view", "user_id": "k1", "item_id": "i1"}
    assert c.post("/events", json=ev).status_code == 401
    assert "write API key" in c.post("/events", json=ev).json()["detail"]
    assert c.post("/events", json=ev, headers={"X-API-Key": "nope"}).status_code == 401
    assert c.post("/events", json=ev, headers=WRITE).status_code == 202
    assert c.post("/events", json=ev, headers=ADMIN).status_code == 202
    assert c.get("/admin/models").status_code == 401
    assert c.get("/admin/models", headers=WRITE).status_code == 401
    models = c.get("/admin/models", headers=ADMIN).json()
    assert models["active"] == models["serving"] == "v1"
    assert c.get("/recommendations/u1").status_code == 200


def test_keyed_reads_and_disabled_admin(tmp_path):
    settings = isolated_settings(
        tmp_path / "var", read_keys={"r"}, inprocess=False, impressions_enabled=False
    )
    store = FeatureStore.open(settings)
    publish(store)
    with TestClient(create_app(settings, store=store)) as c:
        assert c.get("/recommendations/u1").status_code == 401
        assert c.get("/recommendations/u1", headers={"X-API-Key": "r"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # ops endpoints stay open
        r = c.post("/admin/reload", headers={"X-API-Key": "r"})
        assert r.status_code == 403 and "RECSYS_API_ADMIN_KEYS" in r.json()["detail"]
    store.close()


def test_limits_and_validation_give_4xx_with_a_message(svc):
    c, _, _ = svc
    big = b"[" + b",".join([b'{"event_type":"view","user_id":"u","item_id":"i1"}'] * 200) + b"]"
    r = c.post("/events", content=big, headers={**WRITE, "content-type": "application/json"})
    assert r.status_code == 413 and "4096" in r.json()["detail"]
    assert c.get("/recommendations/u1?k=0").status_code == 422
    assert c.get("/recommendations/u1?k=101").status_code == 422
    assert c.get("/recommendations/a%01b").status_code == 422
    assert c.get("/recommendations/" + "x" * 300).status_code == 422
    r = c.get("/recommendations/u1?category=Westerns")
    assert r.status_code == 422 and "Westerns" in r.json()["detail"]
    r = c.get("/recommendations/u1?variant=zzz")
    assert r.status_code == 422 and "control" in r.json()["detail"]
    assert c.post("/admin/models/nope!/activate", headers=ADMIN).status_code == 422
    assert c.post("/admin/models/v9/activate", headers=ADMIN).status_code == 404


def _ids(body):
    return [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize("user", ["u2", "cold-user"])
def test_filters_apply_for_personalized_and_cold_users(svc, user):
    c, _, _ = svc
    only = c.get(f"/recommendations/{user}?k=20&category=Sci-Fi").json()
    assert len(only["items"]) == 20 and all(i["categories"] == ["Sci-Fi"] for i in only["items"])
    none = c.get(f"/recommendations/{user}?k=20&exclude_category=Sci-Fi").json()
    assert len(none["items"]) == 20 and all("Sci-Fi" not in i["categories"] for i in none["items"])
    # Every fifth item is unavailable: never served unless asked for.
    served = _ids(c.get(f"/recommendations/{user}?k=100").json())
    assert served and all(int(i[1:]) % 5 for i in served)
    anything = _ids(c.get(f"/recommendations/{user}?k=100&available_only=false").json())
    assert any(int(i[1:]) % 5 == 0 for i in anything)


def test_seen_items_are_excluded_by_default(svc):
    c, _, _ = svc
    # u2's profile saw i2 and i3.
    assert not {"i2", "i3"} & set(_ids(c.get("/recommendations/u2?k=100").json()))
    assert {"i2", "i3"} & set(
        _ids(c.get("/recommendations/u2?k=100&exclude_seen=false&available_only=false").json())
    )


def test_explain_gives_each_term_once_and_they_sum_to_the_score_exactly(svc):
    c, _, _ = svc
    body = c.get("/recommendations/u-rt?k=5&explain=true&variant=control").json()
    plain = c.get("/recommendations/u-rt?k=5&variant=control").json()
    assert body["items"]
    for it in body["items"]:
        b = it["score_breakdown"]
        assert {"ann", "category", "recent", "popularity"} <= set(b)
        assert "ann_similarity" not in b  # the ANN counts once, as its weighted term
        assert sum(b.values()) == it["score"]  # exactly, as a client adds them up
        assert all(v == round(v, 5) for v in b.values())
    assert [i["score"] for i in plain["items"]] == [i["score"] for i in body["items"]]
    assert "score_breakdown" not in plain["items"][0]


def test_ab_bucketing_is_deterministic_and_variants_rank_differently(svc):
    c, _, _ = svc
    names = sorted(VARIANTS)
    users = [f"ab{i}" for i in range(400)]
    first = [bucket(u, names, "ab1") for u in users]
    assert first == [bucket(u, names, "ab1") for u in users]
    share = Counter(first)["control"] / len(users)
    assert 0.4 < share < 0.6
    assert [bucket(u, names, "other") for u in users] != first
    served = {c.get(f"/recommendations/{u}?k=3").json()["variant"] for u in users[:20]}
    assert served == {first[i] for i in range(20)}
    a = c.get("/recommendations/u-rt?k=10&variant=control").json()
    b = c.get("/recommendations/u-rt?k=10&variant=recent_only").json()
    assert a["variant"] == "control" and b["variant"] == "recent_only"
    assert _ids(a) != _ids(b)
    metrics = c.get("/metrics").text
    assert 'variant="recent_only"' in metrics and "recsys_recommend_seconds_bucket" in metrics
    for name in ("recsys_candidates_bucket", "recsys_cache_total", 'model_version="v1"'):
        assert name in metrics


def test_the_server_request_id_names_the_impression_that_reaches_kafka(svc):
    c, settings, _ = svc
    r = c.get("/recommendations/u4?k=4", headers={"X-Request-ID": "req-abc.1"})
    rid = r.json()["request_id"]
    assert r.headers["x-request-id"] == rid != "req-abc.1"  # the client's id is only logged
    again = c.get("/recommendations/u4?k=4", headers={"X-Request-ID": "req-abc.1"})
    assert again.json()["request_id"] not in (rid, "req-abc.1")

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"t-{time.time_ns()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign(
        [
            TopicPartition(settings.kafka.impressions_topic, p, 0)
            for p in range(settings.kafka.topic_partitions)
        ]
    )
    body = r.json()
    found = None
    deadline = time.monotonic() + 20
    try:
        while found is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            imp = decode_impression(msg.value())
            assert imp.request_id != "req-abc.1"
            if imp.request_id == rid:
                found = imp
    finally:
        consumer.close()
    assert found is not None, "no impression for the request on the topic"
    assert found.user_id == "u4" and found.items == _ids(body)
    assert found.positions == [1, 2, 3, 4]
    assert found.model_version == "v1" and found.variant == body["variant"]
    assert found.scores == [i["score"] for i in body["items"]]


def test_hot_model_swap_under_load_fails_no_request_and_never_mixes_versions(svc):
    """Publish and activate v2 (different item ids, so a mix would show) while threads
    request without pause; then roll back to v1."""
    c, _, store = svc
    record, items, vecs, profiles = make_model("v2", n=200, dim=16, seed=1, n_profiles=20)
    for it in items:
        it.item_id = "v2-" + it.item_id
    stop = threading.Event()
    seen: list[tuple[int, str, list[str]]] = []
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        try:
            while not stop.is_set():
                for user in (f"u{n}", "u-rt", f"cold{n}"):
                    r = c.get(f"/recommendations/{user}?k=10")
                    body = r.json() if r.status_code == 200 else {}
                    seen.append((r.status_code, body.get("model_version", ""), _ids(body)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        store.publish_model(record, items, vecs, profiles)
        r = c.post("/admin/models/v2/activate", headers=ADMIN)
        assert r.status_code == 200 and r.json()["serving"] == "v2"
        time.sleep(0.5)
        assert c.post("/admin/models/v1/activate", headers=ADMIN).json()["serving"] == "v1"
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    statuses = Counter(s for s, _, _ in seen)
    assert statuses == {200: len(seen)}, statuses
    versions = Counter(v for _, v, _ in seen)
    assert versions["v1"] and versions["v2"], versions
    for _, version, ids in seen:
        assert ids and all(i.startswith("v2-") == (version == "v2") for i in ids)


def test_unknown_variant_parameters_are_refused_at_start():
    from core.ranking import RankParams
    from core.settings import RankingSettings
    from core.variants import variant_params

    base = RankParams.from_settings(RankingSettings())

    with pytest.raises(ValueError, match="unknown parameters \\['weight_recnet'\\]"):
        variant_params(base, {"a": {}, "b": {"weight_recnet": 1.0}})
    assert variant_params(base, {"b": {"weight_recent": 2.0}})["b"].weight_recent == 2.0


def test_admin_publishes_latest_from_the_model_dir_and_rolls_back(svc):
    c, settings, _ = svc
    assert c.post("/admin/models/publish", headers=WRITE).status_code == 401
    r = c.post("/admin/models/publish", headers=ADMIN, json={"version": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    name = write_model_dir(settings.model_dir, seed=3, dim=16)
    r = c.post("/admin/models/publish", headers=ADMIN)  # no body: LATEST, activated
    assert r.status_code == 200, r.text
    assert r.json()["active"] == r.json()["serving"] == name
    assert c.get("/recommendations/u1?k=3").json()["model_version"] == name
    assert c.post("/admin/models/v1/activate", headers=ADMIN).json()["serving"] == "v1"
    assert c.get("/recommendations/u1?k=3").json()["model_version"] == "v1"
    assert {m["version"] for m in c.get("/admin/models", headers=ADMIN).json()["models"]} >= {
        "v1",
        name,
    }


def test_diversity_trades_relevance_for_less_similar_items(svc):
    c, _, store = svc
    vectors = store.load_catalog("v1").vectors
    index = {f"i{r}": r for r in range(len(vectors))}

    def similarity(ids):
        v = vectors[[index[i] for i in ids]]
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = v @ v.T
        return float((sims.sum() - len(ids)) / (len(ids) * (len(ids) - 1)))

    plain = _ids(c.get("/recommendations/u-rt?k=10").json())
    diverse = _ids(c.get("/recommendations/u-rt?k=10&diversity=0.7").json())
    assert len(diverse) == 10 and diverse != plain
    assert similarity(diverse) < similarity(plain)
    assert plain == _ids(c.get("/recommendations/u-rt?k=10&diversity=0").json())
    assert c.get("/recommendations/u-rt?diversity=1.5").status_code == 422
