"""Server adapter: a Qdrant server through qdrant-client (the production topology).

The API replicas and the dataflow processes all talk to one Qdrant server, so any
number of them may run at once. ``QdrantClient(":memory:")`` speaks the same API and
runs the contract tests without a server.

Delivery: upserts and deletes are sent with ``wait=True``, so a write has been applied
(and is in the server's WAL) when the call returns; a failed call raises and the caller
retries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
from qdrant_client import QdrantClient, models

from featurestore.backend import ItemFilter, StoredPoint, StoreError
from featurestore.layout import CollectionSpec


def _id(point_id: object) -> int | str:
    """Integers stay integers; a UUID id comes back as its string."""
    return point_id if isinstance(point_id, int) else str(point_id)


def _dense(vector: object) -> list[float] | None:
    """A point's vector: every collection here holds one unnamed dense vector
    (``featurestore.layout``), so the library's named/sparse/multi shapes never occur."""
    return cast(list[float] | None, vector)


def _filter(exclude_ids: Sequence[int | str], f: ItemFilter | None) -> models.Filter | None:
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    if exclude_ids:
        must_not.append(models.HasIdCondition(has_id=list(exclude_ids)))
    if f is not None:
        if f.include_categories:
            must.append(
                models.FieldCondition(
                    key="categories", match=models.MatchAny(any=list(f.include_categories))
                )
            )
        if f.exclude_categories:
            must_not.append(
                models.FieldCondition(
                    key="categories", match=models.MatchAny(any=list(f.exclude_categories))
                )
            )
        if f.available_only:
            must_not.append(
                models.FieldCondition(key="available", match=models.MatchValue(value=False))
            )
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


class ServerBackend:
    def __init__(self, client: QdrantClient) -> None:
        self._c = client

    @classmethod
    def connect(cls, url: str, api_key: str | None = None) -> ServerBackend:
        client = QdrantClient(url=url, api_key=api_key) if url != ":memory:" else QdrantClient(url)
        try:
            client.get_collections()
        except Exception as e:  # connection refused, DNS, auth...
            raise StoreError(f"cannot reach the Qdrant server at {url}: {e}") from e
        return cls(client)

    def list_collections(self) -> set[str]:
        return {c.name for c in self._c.get_collections().collections}

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        if self._c.collection_exists(name):
            return
        try:
            self._c.create_collection(
                name,
                vectors_config=models.VectorParams(size=spec.dim, distance=models.Distance.DOT),
                # Read only by id: no HNSW graph to build.
                hnsw_config=None if spec.searchable else models.HnswConfigDiff(m=0),
            )
        except Exception:
            if self._c.collection_exists(name):  # another replica created it meanwhile
                return
            raise
        for field in spec.keyword_indexes:
            self._c.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
        for field in spec.float_indexes:
            self._c.create_payload_index(name, field, models.PayloadSchemaType.FLOAT)
        for field in spec.bool_indexes:
            self._c.create_payload_index(name, field, models.PayloadSchemaType.BOOL)

    def collection_dim(self, name: str) -> int:
        params = self._c.get_collection(name).config.params.vectors
        if isinstance(params, models.VectorParams):
            return params.size
        raise StoreError(f"collection {name!r} has named vectors; expected one unnamed vector")

    def drop_collection(self, name: str) -> None:
        self._c.delete_collection(name)

    def upsert(
        self,
        name: str,
        ids: Sequence[int | str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        if len(ids) == 0:
            return
        rows = vectors.astype(np.float32).tolist() if isinstance(vectors, np.ndarray) else vectors
        self._c.upsert(
            name,
            points=models.Batch(
                ids=list(ids), vectors=[list(v) for v in rows], payloads=list(payloads)
            ),
            wait=True,
        )

    def delete(self, name: str, ids: Sequence[int | str]) -> None:
        if ids:
            self._c.delete(name, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def retrieve(
        self, name: str, ids: Sequence[int | str], with_vectors: bool = False
    ) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._c.retrieve(
            name, ids=list(ids), with_payload=True, with_vectors=with_vectors
        )
        return [
            StoredPoint(_id(r.id), r.payload or {}, _dense(r.vector) if with_vectors else None)
            for r in records
        ]

    def find(
        self, name: str, key: str, value: str, limit: int = 1, with_vectors: bool = False
    ) -> list[StoredPoint]:
        match = models.Filter(
            must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))]
        )
        try:
            records, _ = self._c.scroll(
                name, scroll_filter=match, limit=limit, with_payload=True, with_vectors=with_vectors
            )
        except Exception:
            if not self._c.collection_exists(name):  # as the embedded adapter says it
                raise StoreError(f"collection {name!r} does not exist") from None
            raise
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
        res = self._c.query_points(
            name,
            query=list(vector),
            limit=limit,
            query_filter=_filter(exclude_ids, item_filter),
            with_payload=False,
        )
        return [(cast(int, p.id), p.score) for p in res.points]

    def scroll(
        self, name: str, with_vectors: bool = False, batch: int = 1024
    ) -> Iterator[StoredPoint]:
        offset = None
        while True:
            records, offset = self._c.scroll(
                name, limit=batch, offset=offset, with_payload=True, with_vectors=with_vectors
            )
            for r in records:
                yield StoredPoint(
                    _id(r.id), r.payload or {}, _dense(r.vector) if with_vectors else None
                )
            if offset is None:
                return

    def top_by(self, name: str, key: str, limit: int) -> list[StoredPoint]:
        records, _ = self._c.scroll(
            name,
            limit=limit,
            with_payload=True,
            order_by=models.OrderBy(key=key, direction=models.Direction.DESC),
        )
        return [StoredPoint(_id(r.id), r.payload or {}) for r in records]

    def count(self, name: str) -> int:
        return self._c.count(name, exact=True).count

    def optimize(self, name: str) -> None:
        """The server indexes in the background; nothing to force."""

    def ensure_float_index(self, name: str, key: str) -> None:
        self._c.create_payload_index(name, key, models.PayloadSchemaType.FLOAT)

    def close(self) -> None:
        self._c.close()
