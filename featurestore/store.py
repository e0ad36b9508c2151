"""The feature store: one interface over either Qdrant adapter.

Writers: the dataflow (user state, item trends), training's publish step (items,
profiles, model registry) and an erasure (``erase_user``: the API and the dataflow).
Readers: the API and the dataflow (catalogue, returning users, erasures). The payload
shapes live in ``core.records`` (items, models, profiles), ``core.state`` (user state,
trends) and here (``ErasureRecord``).

Delivery: every write is an idempotent whole-point upsert or delete (a replayed write
stores the same value), durable once the adapter returns (see each adapter).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from core.catalog import Catalog, CatalogProvider
from core.events import ErasureMarker
from core.items import ItemHead
from core.records import ItemRecord, ModelRecord, Profile, iso
from core.settings import Settings
from core.state import Trend, UserState
from featurestore import layout as col
from featurestore.backend import Backend, ItemFilter, StoreError
from featurestore.runtime import RuntimeItems

log = logging.getLogger(__name__)

Progress = Callable[[int], object]

ITEM_IDS_KEPT = 4
"""Model versions whose item ids ``FeatureStore.item_ids`` keeps in memory."""


class ErasureRecord(msgspec.Struct, frozen=True):
    """A user's erasure as the store keeps it (in ``erasures``, under the user's point id:
    the user id itself is not stored): per partition of one incarnation of the events
    topic, the last offset of the user's events to ignore."""

    offsets: dict[int, int]
    log_id: str | None
    """The events topic incarnation (``eventlog.admin.events_log_id``) the offsets count in."""
    requested_at: float

    @classmethod
    def at(
        cls, marker: ErasureMarker, partition: int, offset: int, log_id: str | None
    ) -> ErasureRecord:
        """The record of ``marker``, read at ``partition``/``offset``: everything up to it on
        its partition, and below the end offsets it carries on the others."""
        offsets = {p: end - 1 for p, end in marker.before.items() if end > 0}
        offsets[partition] = offset
        return cls(offsets, log_id, marker.requested_at)

    def merged(self, older: ErasureRecord | None) -> ErasureRecord:
        """This record, keeping the later offsets of an older one of the same topic."""
        if older is None or older.log_id != self.log_id:
            return self
        offsets = dict(older.offsets)
        for p, o in self.offsets.items():
            offsets[p] = max(o, offsets.get(p, -1))
        return ErasureRecord(offsets, self.log_id, max(self.requested_at, older.requested_at))

    def covered_by(self, state: UserState) -> bool:
        """True if ``state`` was folded after this erasure: it is past every offset."""
        return state.log_id == self.log_id and all(
            state.offsets.get(p, -1) >= o for p, o in self.offsets.items()
        )

    def fresh_state(self, user_id: str) -> UserState:
        """The state a user starts from after the erasure: it skips the events before it."""
        return UserState(user_id, offsets=dict(self.offsets), log_id=self.log_id)

    def to_payload(self) -> dict[str, Any]:
        return {"erasure": msgspec.json.encode(self).decode()}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ErasureRecord:
        return _decode_erasure_record(payload["erasure"])


_decode_erasure_record = msgspec.json.Decoder(ErasureRecord).decode


@dataclass(frozen=True, slots=True)
class UserPoints:
    """What the store holds of a user (``user_points``), or deleted (``erase_user``)."""

    user_state: bool
    """Real-time features."""
    profiles: list[str]
    """The model versions with a long-term profile of the user."""


class FeatureStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._user_dim: int | None = None
        self._item_ids: dict[tuple[str, int], list[str]] = {}
        self._item_ids_lock = threading.Lock()
        self.runtime = RuntimeItems(backend)
        """Items written at runtime (``featurestore.runtime``)."""
        self.backend.create_collection(col.MODELS, col.spec_for(col.MODELS, 0))
        self.backend.create_collection(col.ITEM_TRENDS, col.spec_for(col.ITEM_TRENDS, 0))
        self.backend.create_collection(col.ERASURES, col.spec_for(col.ERASURES, 0))

    @classmethod
    def open(cls, settings: Settings) -> FeatureStore:
        # Each adapter imports its own Qdrant library: a process loads only the one it uses.
        if settings.qdrant.url:
            from featurestore.server import ServerBackend

            return cls(ServerBackend.connect(settings.qdrant.url, settings.qdrant.api_key))
        from featurestore.edge import EdgeBackend

        assert settings.qdrant.path is not None
        return cls(EdgeBackend(settings.qdrant.path))

    def close(self) -> None:
        self.backend.close()

    # --- model registry -----------------------------------------------------

    def publish_model(
        self,
        record: ModelRecord,
        items: Sequence[ItemRecord],
        item_vectors: np.ndarray,
        profiles: Sequence[Profile],
        batch: int = 512,
        progress: Progress | None = None,
        item_head: ItemHead | None = None,
    ) -> None:
        """Write a version's items and profiles beside the live ones, and the runtime
        catalogue's items re-embedded by its ``item_head``. Does not activate it.

        Re-publishing a version rewrites it from scratch, so a publish interrupted
        half-way is repaired by running it again.
        """
        version = record.version
        self._forget_item_ids(version)
        if item_vectors.shape != (len(items), record.dim):
            raise StoreError(
                f"item vectors have shape {item_vectors.shape}, expected ({len(items)}, {record.dim})"
            )
        self._check_user_dim(record.dim)
        if version == self.active_version():
            raise StoreError(f"model {version} is live; publish under a new version instead")
        for name in (col.items_collection(version), col.profiles_collection(version)):
            self.backend.drop_collection(name)
            self.backend.create_collection(name, col.spec_for(name, record.dim))

        items_name = col.items_collection(version)
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            self.backend.upsert(
                items_name,
                list(range(start + 1, start + 1 + len(chunk))),  # row + 1
                item_vectors[start : start + batch],
                [it.to_payload(version) for it in chunk],
            )
            if progress:
                progress(len(chunk))
        self.backend.delete(col.MODELS, [col.rows_point(version)])
        self._write_item_head(version, item_head)
        self.runtime.write_rows(version, self.runtime.all(), items, item_vectors, item_head)
        self.backend.optimize(items_name)

        written = self._write_profiles(version, profiles, batch, progress)
        record.items, record.profiles = len(items), written
        self.backend.upsert(col.MODELS, [col.model_point(version)], [[0.0]], [record.to_payload()])

    def _write_item_head(self, version: str, head: ItemHead | None) -> None:
        point = col.item_head_point(version)
        if head is None:
            self.backend.delete(col.MODELS, [point])
            return
        buf = io.BytesIO()
        np.savez(buf, **head.arrays())  # type: ignore[arg-type]
        payload = {"item_head": base64.b64encode(buf.getvalue()).decode()}
        self.backend.upsert(col.MODELS, [point], [[0.0]], [payload])

    def item_head(self, version: str) -> ItemHead | None:
        """The version's item-tower head; None for a model published without one."""
        hits = self.backend.retrieve(col.MODELS, [col.item_head_point(version)])
        if not hits:
            return None
        return ItemHead.from_arrays(
            np.load(io.BytesIO(base64.b64decode(hits[0].payload["item_head"])))
        )

    def catch_up_runtime_items(self, version: str, since: float) -> None:
        """Write into ``version`` the runtime items changed after revision ``since`` (of
        ``runtime.revision()``): those a writer put into the version live before it."""
        entries = self.runtime.since(since)
        if entries:
            catalog = self.load_catalog(version)
            items, vectors = catalog.items[: catalog.trained], catalog.vectors[: catalog.trained]
            self.runtime.write_rows(version, entries, items, vectors, self.item_head(version))

    def _write_profiles(
        self, version: str, profiles: Sequence[Profile], batch: int, progress: Progress | None
    ) -> int:
        """Write a version's profiles but those of erased users; returns how many."""
        name = col.profiles_collection(version)
        written = 0
        for start in range(0, len(profiles), batch):
            chunk = profiles[start : start + batch]
            ids = [col.user_point(p.user_id) for p in chunk]
            erased = self._erased(ids)
            keep = [k for k, i in enumerate(ids) if i not in erased]
            if keep:
                self.backend.upsert(
                    name,
                    [ids[k] for k in keep],
                    np.stack([chunk[k].vector for k in keep]).astype(np.float32),
                    [chunk[k].to_payload(version) for k in keep],
                )
            written += len(keep)
            if progress:
                progress(len(chunk))
        return written

    def activate(self, version: str) -> None:
        """Switch serving and the dataflow to ``version`` (one point write)."""
        if self.model(version) is None:
            raise StoreError(f"model {version} is not published")
        self.backend.upsert(
            col.MODELS,
            [col.ACTIVE_POINT],
            [[0.0]],
            [{"active_version": version, "activated_at": iso(time.time())}],
        )

    def active_version(self) -> str | None:
        hits = self.backend.retrieve(col.MODELS, [col.ACTIVE_POINT])
        return hits[0].payload.get("active_version") if hits else None

    def model(self, version: str) -> ModelRecord | None:
        hits = self.backend.retrieve(col.MODELS, [col.model_point(version)])
        return ModelRecord.from_payload(hits[0].payload) if hits else None

    def list_models(self) -> list[ModelRecord]:
        return sorted(
            (
                ModelRecord.from_payload(p.payload)
                for p in self.backend.scroll(col.MODELS)
                if "version" in p.payload
            ),
            key=lambda m: m.created_at,
        )

    def models_overview(self, serving: str | None = None) -> dict[str, Any]:
        """Published versions and the active one: GET /admin/models and `recsys models`."""
        return {
            "active": self.active_version(),
            "serving": serving,
            "models": [
                {
                    "version": m.version,
                    "created_at": m.created_at,
                    "items": m.items,
                    "profiles": m.profiles,
                    "metrics": m.metrics,
                }
                for m in self.list_models()
            ],
        }

    def _check_user_dim(self, dim: int) -> None:
        if col.USER_STATE not in self.backend.list_collections():
            self.backend.create_collection(col.USER_STATE, col.spec_for(col.USER_STATE, dim))
        have = self._user_dim = self.backend.collection_dim(col.USER_STATE)
        if have != dim:
            raise StoreError(
                f"the user_state collection holds {have}-d vectors but this model is {dim}-d; "
                "train with the same --dim, or drop user_state to start real-time state afresh"
            )

    # --- items --------------------------------------------------------------

    def load_catalog(self, version: str) -> Catalog:
        """The version's rows, trained and runtime, as they stand."""
        record = self.model(version)
        if record is None:
            raise StoreError(f"model {version} is not published")
        count, rev = self.runtime.rows(version)
        count = max(count, record.items)
        points = sorted(
            self.backend.scroll(col.items_collection(version), with_vectors=True),
            key=lambda p: int(p.id),
        )
        points = [p for p in points if int(p.id) <= count]
        if [p.id for p in points] != list(range(1, count + 1)):
            raise StoreError(
                f"model {version}: {len(points)} items in the store, registry says {count}"
            )
        return Catalog(
            version=version,
            items=[ItemRecord.from_payload(p.payload) for p in points],
            vectors=np.asarray([p.vector for p in points], dtype=np.float32).reshape(
                len(points), record.dim
            ),
            head=record.head,
            rev=rev,
            trained=record.items,
        )

    def item_ids(self, version: str) -> list[str] | None:
        """A published version's item ids by catalogue row (runtime rows included); None
        if the store no longer holds it. Read once per version and row count: trained
        rows never change once published, and runtime writes add rows."""
        record = self.model(version)
        if record is None:
            return None
        count = max(self.runtime.rows(version)[0], record.items)
        ids = self._item_ids.get((version, count))
        if ids is not None:
            return ids
        try:
            points = self.backend.scroll(col.items_collection(version))
            by_row = sorted((int(p.id), p.payload["item_id"]) for p in points)
        except StoreError:
            return None
        by_row = by_row[:count]
        if [r for r, _ in by_row] != list(range(1, count + 1)):
            return None
        ids = [i for _, i in by_row]
        with self._item_ids_lock:  # the API and the in-process dataflow share a store
            while len(self._item_ids) >= ITEM_IDS_KEPT:
                del self._item_ids[next(iter(self._item_ids))]
            self._item_ids[(version, count)] = ids
        return ids

    def _forget_item_ids(self, version: str) -> None:
        with self._item_ids_lock:
            for key in [k for k in self._item_ids if k[0] == version]:
                del self._item_ids[key]

    def read_item(self, version: str, item_id: str) -> tuple[ItemRecord, np.ndarray] | None:
        """An item of a published version as the store holds it now, with its vector;
        None if that version has no such item (or is gone). For items a process's
        in-memory catalogue may not hold yet (written since it was loaded)."""
        try:
            hits = self.backend.find(
                col.items_collection(version), "item_id", item_id, with_vectors=True
            )
        except StoreError:
            return None
        if not hits or hits[0].vector is None:
            return None
        vector = np.asarray(hits[0].vector, dtype=np.float32)
        return ItemRecord.from_payload(hits[0].payload), vector

    def catalog_provider(self) -> CatalogProvider:
        return CatalogProvider(self.active_version, self.load_catalog, self.runtime.changed_rows)

    def search_items(
        self,
        version: str,
        vector: np.ndarray,
        limit: int,
        exclude_rows: Sequence[int] = (),
        item_filter: ItemFilter | None = None,
    ) -> list[tuple[int, float]]:
        """ANN candidates as (catalogue row, dot-product score), best first; the filter is
        applied by the engine during the search."""
        hits = self._search(version, vector, limit, exclude_rows, item_filter)
        return [(i - 1, score) for i, score in hits]

    def search_item_rows(
        self,
        version: str,
        vector: np.ndarray,
        limit: int,
        exclude_rows: Sequence[int] = (),
        item_filter: ItemFilter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search_items`` as two arrays, the form the re-rank reads: catalogue rows
        (int64) and their scores (float32, the engine's own precision), best first."""
        hits = self._search(version, vector, limit, exclude_rows, item_filter)
        if not hits:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        ids, scores = zip(*hits, strict=True)
        return np.array(ids, dtype=np.int64) - 1, np.array(scores, dtype=np.float32)

    def _search(
        self,
        version: str,
        vector: np.ndarray,
        limit: int,
        exclude_rows: Sequence[int],
        item_filter: ItemFilter | None,
    ) -> list[tuple[int, float]]:
        """The engine's hits: (point id = catalogue row + 1, score)."""
        return self.backend.search(
            col.items_collection(version),
            vector.tolist(),
            limit,
            exclude_ids=[r + 1 for r in exclude_rows],
            item_filter=item_filter or None,
        )

    # --- users --------------------------------------------------------------

    def write_user_states(self, states: Sequence[UserState]) -> None:
        if not states:
            return
        if not self._user_state_exists():
            raise StoreError("no model has been published yet: user_state does not exist")
        assert self._user_dim is not None
        zero = np.zeros(self._user_dim, dtype=np.float32)
        self.backend.upsert(
            col.USER_STATE,
            [col.user_point(s.user_id) for s in states],
            np.stack([zero if s.vector is None else s.vector for s in states]),
            [s.to_payload() for s in states],
        )

    def _user_state_exists(self) -> bool:
        """Cached once true: listing collections costs more than the read itself."""
        if self._user_dim is None and col.USER_STATE in self.backend.list_collections():
            self._user_dim = self.backend.collection_dim(col.USER_STATE)
        return self._user_dim is not None

    def read_user_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        if not user_ids or not self._user_state_exists():
            return {}
        points = self.backend.retrieve(
            col.USER_STATE, [col.user_point(u) for u in user_ids], with_vectors=True
        )
        states = (UserState.from_payload(p.payload, p.vector) for p in points)
        return {s.user_id: s for s in states}

    def read_user_state(self, user_id: str) -> UserState | None:
        return self.read_user_states([user_id]).get(user_id)

    def read_profile(self, version: str, user_id: str) -> Profile | None:
        hits = self.backend.retrieve(
            col.profiles_collection(version), [col.user_point(user_id)], with_vectors=True
        )
        if not hits:
            return None
        return Profile.from_payload(hits[0].payload, hits[0].vector)

    def profile_users(self, version: str, limit: int) -> list[tuple[str, int]]:
        """(user id, items seen in training) of up to ``limit`` long-term profiles of a
        version, in storage order: users a client can pick knowing the model has a
        history for them. Reads no more than it returns."""
        out: list[tuple[str, int]] = []
        for p in self.backend.scroll(col.profiles_collection(version), batch=min(limit, 1024)):
            if len(out) >= limit:
                break
            if "user_id" in p.payload:
                seen = msgspec.json.decode(p.payload.get("seen") or "[]")
                out.append((p.payload["user_id"], len(seen)))
        return out

    # --- erasure (GDPR Art. 17) ---------------------------------------------

    def erase_user(self, user_id: str, record: ErasureRecord) -> UserPoints:
        """Remove a user from the store: first record the erasure (merged with an earlier
        one), so a flow replaying the events topic skips the user's events before it; then
        delete their real-time state, unless it was folded after the erasure already (a
        fresh user since), and their long-term profile in every model version. Idempotent;
        returns what it deleted.
        """
        point = col.user_point(user_id)
        record = record.merged(self.read_erasure(user_id))
        self.backend.upsert(col.ERASURES, [point], [[0.0]], [record.to_payload()])
        state = self.read_user_state(user_id)
        removed_state = state is not None and not record.covered_by(state)
        if removed_state:
            self.backend.delete(col.USER_STATE, [point])
        versions = self._profile_versions(point)
        for version in versions:
            self.backend.delete(col.profiles_collection(version), [point])
        return UserPoints(removed_state, versions)

    def user_points(self, user_id: str) -> UserPoints:
        """What the store holds of a user (what ``erase_user`` would delete)."""
        point = col.user_point(user_id)
        state = self._user_state_exists() and self.backend.retrieve(col.USER_STATE, [point])
        return UserPoints(bool(state), self._profile_versions(point))

    def _profile_versions(self, point: str) -> list[str]:
        """The versions whose profiles hold ``point`` (published or not)."""
        return [
            name.removeprefix(col.PROFILES_PREFIX)
            for name in sorted(self.backend.list_collections())
            if name.startswith(col.PROFILES_PREFIX) and self.backend.retrieve(name, [point])
        ]

    def read_erasure(self, user_id: str) -> ErasureRecord | None:
        return self.read_erasures([user_id]).get(user_id)

    def read_erasures(self, user_ids: Sequence[str]) -> dict[str, ErasureRecord]:
        """The recorded erasures of those of ``user_ids`` that were erased, by user."""
        if not user_ids:
            return {}
        users = {col.user_point(u): u for u in user_ids}  # the record holds no user id
        hits = self.backend.retrieve(col.ERASURES, list(users))
        return {users[str(p.id)]: ErasureRecord.from_payload(p.payload) for p in hits}

    def _erased(self, points: Sequence[str]) -> set[str]:
        """Which of these user points belong to erased users."""
        return {str(p.id) for p in self.backend.retrieve(col.ERASURES, points)}

    # --- trends -------------------------------------------------------------

    def write_trends(self, trends: Sequence[Trend]) -> None:
        if trends:
            self.backend.upsert(
                col.ITEM_TRENDS,
                [col.item_point(t.item_id) for t in trends],
                [[0.0]] * len(trends),
                [t.to_payload() for t in trends],
            )

    def read_trends(self, item_ids: Sequence[str]) -> dict[str, Trend]:
        points = self.backend.retrieve(col.ITEM_TRENDS, [col.item_point(i) for i in item_ids])
        return {t.item_id: t for t in (Trend.from_payload(p.payload) for p in points)}

    def top_trends(self, limit: int, now: float, half_life: float) -> list[Trend]:
        """Most active items, decayed to ``now`` (stored scores are as of their own time);
        only items trending now (``Trend.trending``: enough distinct users)."""
        trends = [
            t
            for p in self.backend.top_by(col.ITEM_TRENDS, "score", limit * 4)
            if (t := Trend.from_payload(p.payload)).trending
        ]
        for t in trends:
            t.score *= math.exp2(-max(0.0, now - t.ts) / half_life)
        trends.sort(key=lambda t: t.score, reverse=True)
        return trends[:limit]
