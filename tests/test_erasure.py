"""Erasure (GDPR Art. 17): ``DELETE /users/{id}`` and ``recsys user delete`` remove a user's
real-time state, long-term profiles and the dataflow's state, and the erasure marker on
the events topic keeps a replay of the topic from bringing them back.

First the flow's logic between Bytewax's testing source and sinks (markers in order with
events, across batches, replayed, badly keyed), then the service end to end against the
real broker and store: erase, post again, restart, and replay the whole topic with a
fresh flow into the same store and into a fresh one."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from core.catalog import CatalogProvider
from core.events import ErasureMarker, decode, decode_erasure, encode_erasure
from dataflow.flow import Folders, Sinks, build_flow
from dataflow.parsing import Erasure
from dataflow.runner import DataflowThread
from dataflow.shards import ShardState
from dataflow.users import UserErased, UserFolder
from featurestore import FeatureStore
from featurestore.store import ErasureRecord
from infra.broker import free_port
from infra.cli import app as cli
from infra.process import serve_in_thread
from infra.serve import build_app
from tests.helpers import by_user, isolated_settings, publish, wait_for
from tests.test_flow_logic import CATALOG, SETTINGS, T0, Out, Stored, ev, message


def marker(user: str, offset: int, partition: int = 0, key: bytes | None = None, **kw):
    body = encode_erasure(ErasureMarker(user, T0 + offset, **kw))
    return message(body, offset, partition, key=user.encode() if key is None else key)


def run(msgs, stored: Stored | None = None, batch_size: int = 4, log_id: str | None = None) -> Out:
    out = Out()
    sinks = Sinks(TestingSink(out.dead), TestingSink(out.users), TestingSink(out.trends))
    catalogs = CatalogProvider(lambda: "v1", lambda version: CATALOG)
    folders = Folders.create(SETTINGS, stored or Stored(), catalogs, log_id)
    flow = build_flow(SETTINGS, TestingSource(msgs, batch_size=batch_size), sinks, folders)
    run_main(flow, epoch_interval=timedelta(seconds=10))
    return out


def written(out: Out, user: str) -> list:
    """What the user_state sink received for ``user``, in order."""
    return [s for u, s in out.users if u == user]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- the marker -------------------------------------------------------------------------


def test_the_marker_is_never_an_event_and_no_event_is_a_marker():
    m = ErasureMarker("ann", 1.5, before={0: 3, 2: 7})
    raw = encode_erasure(m)
    assert decode_erasure(raw) == m and m.user_id == "ann"
    with pytest.raises(ValueError, match="missing required field"):
        decode(raw)
    event = msgspec.json.encode(ev("ann", "i1", T0))
    assert decode_erasure(event) is None
    for raw in (b'{"user_id": "ann", "requested_at": 1}', b"{oops", b"", b"[" * 5000):
        assert decode_erasure(raw) is None
    # one more field, even an event's, and it is neither
    assert decode_erasure(b'{"erase_user": "ann", "requested_at": 1, "item_id": "i1"}') is None


# --- the flow's logic -------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_marker_drops_the_user_and_later_events_start_a_new_one(batch_size):
    msgs = [
        message(ev("ann", "i1", T0), 0),
        message(ev("ann", "i2", T0 + 1, "purchase"), 1),
        message(ev("bob", "i3", T0 + 1), 2),
        marker("ann", 3),
        message(ev("ann", "i4", T0 + 5), 4),
    ]
    erased = metric("recsys_users_erased_total")
    out = run(msgs, batch_size=batch_size)
    ann = written(out, "ann")
    marks = [k for k, s in enumerate(ann) if isinstance(s, UserErased)]
    assert len(marks) == 1, ann
    assert ann[marks[0]].record.offsets == {0: 3}
    after = ann[marks[0] + 1 :]
    assert len(after) == 1 and after[0].event_count == 1
    assert [r.item_id for r in after[0].recent] == ["i4"]
    assert after[0].offsets == {0: 4}
    assert out.user("bob").event_count == 1  # other users untouched
    assert out.dead == []  # the marker is no dead letter
    assert {i for i, _ in out.trends} == {"i1", "i2", "i3", "i4"}  # nor an item
    assert metric("recsys_users_erased_total") - erased == 1


def test_a_marker_with_nothing_after_it_leaves_nothing_to_write():
    out = run([message(ev("ann", "i1", T0), 0), marker("ann", 1)])
    assert [type(s).__name__ for s in written(out, "ann")][-1] == "UserErased"
    out = run([marker("nobody", 0)])  # a user the flow never saw: erased all the same
    assert [type(s).__name__ for s in written(out, "nobody")] == ["UserErased"]


def test_the_empty_state_held_after_an_erasure_is_never_written():
    """After the marker the flow holds the user's fresh state (the events after it fold
    into it); the periodic model check must not write it as an empty user."""
    settings = SETTINGS.with_values(model_migrate_seconds=0.01)
    catalogs = CatalogProvider(lambda: "v1", lambda version: CATALOG)
    logic = ShardState.builder(UserFolder(settings, Stored(), catalogs), ttl=60.0, topic="e")(None)
    out, retain = logic.on_batch([by_user(Erasure(ErasureMarker("ann", T0), 0, 3, T0))])
    assert [type(s) for _, s in out] == [UserErased] and retain == StatefulBatchLogic.RETAIN
    time.sleep(0.05)
    assert logic.on_notify() == ([], StatefulBatchLogic.RETAIN)
    assert logic.held["ann"].event_count == 0 and logic.snapshot() == b""


def test_a_replay_skips_the_users_events_before_a_recorded_erasure():
    """A fresh flow reading the topic again from the start, against a store that recorded
    the erasure (and holds no state of the user): nothing before the marker counts, the
    marker itself is a replay, and what followed it is folded again."""
    msgs = [
        message(ev("ann", "i1", T0), 0),
        message(ev("ann", "i2", T0 + 1), 1),
        marker("ann", 2),
        message(ev("ann", "i4", T0 + 5), 3),
    ]
    stored = Stored(erasures={"ann": ErasureRecord({0: 2}, None, T0)})
    out = run(msgs, stored)
    assert [s.event_count for s in written(out, "ann")] == [1]
    assert [r.item_id for r in out.user("ann").recent] == ["i4"]


def test_the_marker_covers_other_partitions_up_to_their_end_when_it_was_sent():
    """After partitions were added a user's older events may sit on another partition:
    the marker carries every partition's end offset, so those are skipped too."""
    msgs = [
        marker("ann", 7, partition=0, before={0: 7, 1: 2}),
        message(ev("ann", "i1", T0), 0, partition=1),  # before the erasure
        message(ev("ann", "i2", T0 + 1), 1, partition=1),  # before the erasure
        message(ev("ann", "i3", T0 + 2), 2, partition=1),  # after it
    ]
    out = run(msgs, batch_size=1)
    assert [r.item_id for r in out.user("ann").recent] == ["i3"]
    stored = Stored(erasures={"ann": written(out, "ann")[0].record})
    assert stored.erasures["ann"].offsets == {0: 7, 1: 1}
    assert [r.item_id for r in run(msgs, stored).user("ann").recent] == ["i3"]


def test_a_marker_keyed_by_another_user_is_dead_lettered():
    out = run([message(ev("ann", "i1", T0), 0), marker("ann", 1, key=b"mallory")])
    (dead,) = out.dead
    headers = dict(dead.headers)
    assert headers["dlq.kind"] == b"invalid_erasure"
    assert b"keyed by b'mallory'" in headers["dlq.reason"]
    assert not any(isinstance(s, UserErased) for _, s in out.users)


def test_a_marker_whose_erasure_fails_is_dead_lettered_as_the_marker(monkeypatch):
    """An exception while erasing goes to the dead-letter topic like a failing event's,
    with the marker's own JSON (it can be produced again as it is); the flow carries on."""

    def broken(*args, **kwargs):
        raise OSError("store gone")

    monkeypatch.setattr(UserFolder, "_erase", broken)
    out = run([message(ev("ann", "i1", T0), 0), marker("ann", 1), message(ev("bob", "i2", T0), 2)])
    (dead,) = out.dead
    headers = dict(dead.headers)
    assert headers["dlq.kind"] == b"internal_error" and b"store gone" in headers["dlq.reason"]
    assert decode_erasure(dead.value) == ErasureMarker("ann", T0 + 1)
    assert out.trend("i2").offsets == {0: 2}


def test_recsys_user_delete_without_a_service_is_one_line_and_non_zero():
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["user", "delete", "u1", "--api-url", url])
    assert result.exit_code == 1 and f"cannot reach the API at {url}" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


# --- the service, end to end ------------------------------------------------------------

ADMIN = {"X-API-Key": "adm"}


def events(user: str, items: list[str]) -> list[dict]:
    return [{"event_type": "view", "user_id": user, "item_id": i} for i in items]


def features(api: httpx.Client, user: str, count: int) -> dict:
    """The user's features once ``count`` events are folded."""
    return wait_for(
        lambda: (
            (r := api.get(f"/users/{user}")).status_code == 200
            and r.json()["event_count"] == count
            and r.json()
        ),
        timeout=30,
    )


def replay(settings, store: FeatureStore, recovery: Path) -> None:
    """A fresh flow (new recovery directory, no position) over the whole topic, to its end."""
    fresh = settings.with_values(recovery={"dir": recovery}, exit_at_end=True)
    assert fresh.kafka.start_offset == "earliest"
    flow = DataflowThread(fresh, store, store.catalog_provider()).start()
    assert flow.join(120), "the replay did not reach the end of the topic"


@pytest.mark.integration
def test_erased_users_stay_erased_through_restarts_and_replays(broker, tmp_path):
    settings = isolated_settings(
        tmp_path / "var", broker, admin_keys={"adm"}, impressions_enabled=False
    )
    store = FeatureStore.open(settings)
    publish(store, "v1", n=60, dim=8, n_profiles=10)
    store.close()
    erased_before = metric("recsys_users_erased_total")

    with serve_in_thread(build_app(settings)) as url, httpx.Client(base_url=url) as api:
        for user in ("u1", "u2", "keep"):
            assert (
                api.post(
                    "/events", json=events(user, ["i1", "i2", "i3"]), headers=ADMIN
                ).status_code
                == 202
            )
        for user in ("u1", "u2", "keep"):
            features(api, user, 3)
        assert api.get("/recommendations/u2").json()["strategy"] == "personalized"
        assert "u2" in [u["user_id"] for u in api.get("/users?limit=100").json()["users"]]

        assert api.delete("/users/u1").status_code == 401  # admin key needed
        r = api.delete("/users/u1", headers=ADMIN)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == "u1" and body["removed_user_state"] is True
        assert body["removed_profiles"] == ["v1"]
        assert body["marker"]["topic"] == settings.kafka.events_topic

        result = CliRunner().invoke(cli, ["user", "delete", "u2", "--api-url", url])
        assert result.exit_code == 1 and "401" in result.output and "--api-key" in result.output
        result = CliRunner().invoke(
            cli, ["user", "delete", "u2", "--api-url", url, "--api-key", "adm"]
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("erased user u2: deleted real-time features and ")
        assert "long-term profile (v1)" in result.stdout and result.stdout.count("\n") == 1

        for user in ("u1", "u2"):
            assert api.get(f"/users/{user}").status_code == 404
            assert api.get(f"/recommendations/{user}").json()["strategy"] == "cold_start"
        assert "u2" not in [u["user_id"] for u in api.get("/users?limit=100").json()["users"]]
        wait_for(lambda: metric("recsys_users_erased_total") - erased_before >= 2, timeout=30)
        assert api.get("/users/u2").status_code == 404  # the flow's own erasure agrees

        # idempotent: again, or a user never seen, is 200 and removes nothing more
        again = api.delete("/users/u2", headers=ADMIN).json()
        assert (again["removed_user_state"], again["removed_profiles"]) == (False, [])
        assert api.delete("/users/never-seen", headers=ADMIN).status_code == 200

        # events after the erasure make a new user of only those events
        assert api.post("/events", json=events("u1", ["i7"]), headers=ADMIN).status_code == 202
        u1 = features(api, "u1", 1)
        assert [e["item_id"] for e in u1["recent"]] == ["i7"]
        assert u1["has_long_term_profile"] is False
        assert features(api, "keep", 3)["has_long_term_profile"] is False

    # a restart resumes from the recovery snapshots: they hold no erased state either
    with serve_in_thread(build_app(settings)) as url, httpx.Client(base_url=url) as api:
        assert api.post("/events", json=events("u1", ["i8"]), headers=ADMIN).status_code == 202
        u1 = features(api, "u1", 2)
        assert [e["item_id"] for e in u1["recent"]] == ["i8", "i7"]
        assert api.get("/users/u2").status_code == 404

    # the whole topic again, with a fresh flow, into the same store and into a fresh one
    fresh = settings.with_values(
        state_dir=tmp_path / "fresh", model_dir=None, qdrant={"path": None}, recovery={"dir": None}
    )
    for s in (settings, fresh):
        store = FeatureStore.open(s)
        try:
            if s is fresh:
                publish(store, "v1", n=60, dim=8, n_profiles=10)
            replay(s, store, tmp_path / f"recovery-{id(s)}")
            assert store.read_user_state("u2") is None
            assert store.read_profile("v1", "u2") is None and store.read_profile("v1", "u1") is None
            u1 = store.read_user_state("u1")
            assert u1 is not None and [r.item_id for r in u1.recent] == ["i7", "i8"]
            assert u1.event_count == 2
            assert store.read_user_state("keep").event_count == 3
            assert store.read_erasure("u2") is not None
            assert store.read_profile("v1", "u3") is not None  # nobody else's profile
        finally:
            store.close()
