"""Embedded adapter: the Qdrant engine in-process (qdrant-edge-py), one shard per collection.

Upserts and deletes are durable once written to the shard's WAL. A shard can be opened
by one process only, hence the embedded default runs API and dataflow in one process; a
second process gets ``StoreLocked`` with a hint instead of Qdrant's raw WAL error.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import qdrant_edge as q

from featurestore.backend import ItemFilter, StoredPoint, StoreError, StoreLocked
from featurestore.layout import CollectionSpec


def _rows(vectors: np.ndarray | Sequence[Sequence[float]]) -> list[list[float]]:
    if isinstance(vectors, np.ndarray):
        rows: list[list[float]] = vectors.astype(np.float32, copy=False).tolist()
        return rows
    return [list(v) for v in vectors]


def _id(point_id: object) -> int | str:
    return point_id if isinstance(point_id, int) else str(point_id)


def _dense(vector: object) -> list[float] | None:
    """A point's vector: every collection here holds one unnamed dense vector
    (``featurestore.layout``), so the library's named/sparse/multi shapes never occur."""
    return cast(list[float] | None, vector)


def _filter(exclude_ids: Sequence[int | str], f: ItemFilter | None) -> q.Filter | None:
    must: list[q.ConditionType] = []
    must_not: list[q.ConditionType] = []
    if exclude_ids:
        must_not.append(q.HasIdCondition(set(exclude_ids)))
    if f is not None:
        if f.include_categories:
            must.append(
                q.FieldCondition("categories", match=q.MatchAny(list(f.include_categories)))
            )
        if f.exclude_categories:
            must_not.append(
                q.FieldCondition("categories", match=q.MatchAny(list(f.exclude_categories)))
            )
        if f.available_only:
            # qdrant-edge-py 0.9.0 reads a Python bool in MatchValue as the integer 0/1,
            # which never matches a bool payload; numpy's bool_ is not an int and converts
            # to a real bool. (Its stubs say bool: the ignore below is for that.)
            no = np.bool_(False)
            must_not.append(q.FieldCondition("available", match=q.MatchValue(no)))  # type: ignore[arg-type]
    if not must and not must_not:
        return None
    return q.Filter(must=must or None, must_not=must_not or None)


class EdgeBackend:
    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self._path / ".lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreLocked(
                f"the embedded store at {self._path} is open in another process "
                "(is `just serve` or the demo running?). Stop it, or point RECSYS_STATE_DIR "
                "elsewhere, or use a Qdrant server (RECSYS_QDRANT_URL)."
            ) from None
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()
        self._shards: dict[str, q.EdgeShard] = {}
        self._guard = threading.Lock()

    # --- collections --------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self._path / name

    def list_collections(self) -> set[str]:
        return {p.name for p in self._path.iterdir() if (p / "edge_config.json").exists()}

    def _shard(self, name: str) -> q.EdgeShard:
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        with self._guard:
            shard = self._shards.get(name)
            if shard is None:
                if not (self._dir(name) / "edge_config.json").exists():
                    raise StoreError(f"collection {name!r} does not exist in {self._path}")
                shard = q.EdgeShard.load(str(self._dir(name)))
                self._shards[name] = shard
        return shard

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        with self._guard:
            if name in self._shards or (self._dir(name) / "edge_config.json").exists():
                return
            config = q.EdgeConfig(
                vectors=q.EdgeVectorParams(size=spec.dim, distance=q.Distance.Dot),
                # Collections read only by id would gain nothing from an HNSW graph but its
                # build cost.
                optimizers=(
                    None if spec.searchable else q.EdgeOptimizersConfig(indexing_threshold=0)
                ),
            )
            shard = q.EdgeShard.create(str(self._dir(name)), config)
            for field in spec.keyword_indexes:
                shard.update(
                    q.UpdateOperation.create_field_index(field, q.PayloadSchemaType.Keyword)
                )
            for field in spec.float_indexes:
                shard.update(q.UpdateOperation.create_field_index(field, q.PayloadSchemaType.Float))
            for field in spec.bool_indexes:
                shard.update(q.UpdateOperation.create_field_index(field, q.PayloadSchemaType.Bool))
            self._shards[name] = shard

    def collection_dim(self, name: str) -> int:
        cfg = json.loads((self._dir(name) / "edge_config.json").read_text())
        for params in (cfg.get("vectors") or {}).values():
            return int(params["size"])
        raise StoreError(f"cannot read the vector size of {name!r}")

    def drop_collection(self, name: str) -> None:
        with self._guard:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._dir(name), ignore_errors=True)

    # --- points -------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[int | str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        points = [q.Point(i, v, p) for i, v, p in zip(ids, _rows(vectors), payloads, strict=True)]
        if points:
            self._shard(name).update(q.UpdateOperation.upsert_points(points))

    def delete(self, name: str, ids: Sequence[int | str]) -> None:
        if ids:
            self._shard(name).update(q.UpdateOperation.delete_points(list(ids)))

    def retrieve(
        self, name: str, ids: Sequence[int | str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._shard(name).retrieve(list(ids), True, with_vectors)
        return [
            StoredPoint(_id(r.id), r.payload or {}, _dense(r.vector) if with_vectors else None)
            for r in records
        ]

    def find(
        self, name: str, key: str, value: str, limit: int = 1, with_vectors: bool = False
    ) -> list[StoredPoint]:
        match = q.Filter(must=[q.FieldCondition(key, match=q.MatchValue(value))])
        records, _ = self._shard(name).scroll(
            q.ScrollRequest(limit=limit, filter=match, with_payload=True, with_vector=with_vectors)
        )
        return [
            StoredPoint(_id(r.id), r.payload or {}, _dense(r.vector) if with_vectors else None)
            for r in records
        ]

    def search(
        self,
        name: str,
        vector: Sequence[float],
        limit: int,
        exclude_ids: Sequence[int] = (),
        item_filter: ItemFilter | None = None,
    ) -> list[tuple[int, float]]:
        hits = self._shard(name).query(
            q.QueryRequest(
                limit=limit,
                query=q.Query.Nearest(list(vector)),
                filter=_filter(exclude_ids, item_filter),
                with_payload=False,
                with_vector=False,
            )
        )
        # the items' point ids are ints (catalogue row + 1): no per-hit type check
        return cast(list[tuple[int, float]], [(h.id, h.score) for h in hits])

    def scroll(
        self, name: str, with_vectors: bool = False, batch: int = 1024
    ) -> Iterator[StoredPoint]:
        shard = self._shard(name)
        offset = None
        while True:
            records, offset = shard.scroll(
                q.ScrollRequest(
                    offset=offset, limit=batch, with_payload=True, with_vector=with_vectors
                )
            )
            for r in records:
                yield StoredPoint(
                    _id(r.id), r.payload or {}, _dense(r.vector) if with_vectors else None
                )
            if offset is None:
                return

    def top_by(self, name: str, key: str, limit: int) -> list[StoredPoint]:
        records, _ = self._shard(name).scroll(
            q.ScrollRequest(
                limit=limit,
                with_payload=True,
                order_by=q.OrderBy(key, direction=q.Direction.Desc),
            )
        )
        return [StoredPoint(_id(r.id), r.payload or {}) for r in records]

    def count(self, name: str) -> int:
        return self._shard(name).count(q.CountRequest(exact=True))

    def optimize(self, name: str) -> None:
        self._shard(name).optimize()

    def ensure_float_index(self, name: str, key: str) -> None:
        self._shard(name).update(
            q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Float)
        )

    def close(self) -> None:
        with self._guard:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
