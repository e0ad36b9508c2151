"""The catalogue-write contract: what producers may put on the items topic.

``POST /items``, ``PATCH /items/{id}`` and ``DELETE /items/{id}`` produce one message per
item, keyed by the item id; the dataflow folds them into the live catalogue. Both sides
decode and check with this module, so a write the API accepts is exactly what the
dataflow applies, and a message the dataflow dead-letters carries the reason the API
would have answered with (422).

    {"op": "upsert", "item_id": "m-1", "title": "Heat", "description": "...",
     "categories": ["Crime"], "available": true, "attributes": {"year": 1995}}
    {"op": "patch", "item_id": "m-1", "available": false}
    {"op": "delete", "item_id": "m-1"}

A delete keeps the item's row (users' histories point at it) and marks it unavailable,
which takes it out of every candidate list at once.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from core.events import Id, InvalidEvent, id_problem
from core.records import ItemRecord, normalize

MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 5_000
MAX_CATEGORIES = 32
MAX_CATEGORY_CHARS = 64
MAX_ATTRIBUTES = 32
MAX_BATCH = 1_000
"""Items per ``POST /items`` request."""

Scalar = str | int | float | bool


class InvalidItem(InvalidEvent):
    """A catalogue write that breaks the contract; ``kind`` names the rule (dead-letter
    header and metric label), the message says what to fix."""


class Upsert(msgspec.Struct, tag="upsert", tag_field="op", forbid_unknown_fields=True):
    """Create the item, or replace every field of it."""

    item_id: Id
    title: str
    description: str = ""
    categories: list[str] = []
    available: bool = True
    attributes: dict[str, Scalar] = {}
    """Free-form scalars kept with the item (``year``, ``price``, ...), returned as they came."""


class Patch(msgspec.Struct, tag="patch", tag_field="op", forbid_unknown_fields=True):
    """Change the given fields of an existing item; the others stay."""

    item_id: Id
    title: str | None = None
    description: str | None = None
    categories: list[str] | None = None
    available: bool | None = None
    attributes: dict[str, Scalar] | None = None


class Delete(msgspec.Struct, tag="delete", tag_field="op", forbid_unknown_fields=True):
    """Take the item out of recommendations (its row stays, unavailable)."""

    item_id: Id


ItemWrite = Upsert | Patch | Delete

_decoder = msgspec.json.Decoder(ItemWrite)
_encoder = msgspec.json.Encoder()
_upsert_body = msgspec.json.Decoder(list[Upsert] | Upsert)


def decode(raw: bytes) -> ItemWrite:
    """One items-topic message, checked; raises ``InvalidItem``."""
    try:
        write = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as e:
        raise _decode_error(e) from None
    return check(write)


def encode(write: ItemWrite) -> bytes:
    return _encoder.encode(write)


def decode_upserts(raw: bytes) -> list[Upsert]:
    """``POST /items``'s body: one item or a list of up to ``MAX_BATCH``, each checked.
    The ``op`` field may be left out there (it is always an upsert)."""
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        raise _decode_error(e) from None
    docs = doc if isinstance(doc, list) else [doc]
    if len(docs) > MAX_BATCH:
        raise InvalidItem(f"{len(docs)} items in one request; at most {MAX_BATCH}", "too_many")
    for d in docs:
        if isinstance(d, dict):
            d.setdefault("op", "upsert")
    try:
        parsed = msgspec.convert(docs, list[ItemWrite])
    except msgspec.ValidationError as e:
        raise _decode_error(e) from None
    out: list[Upsert] = []
    for i, w in enumerate(parsed):
        if not isinstance(w, Upsert):
            raise InvalidItem(f"$[{i}]: POST /items takes upserts only", "invalid_field")
        check(w)
        out.append(w)
    return out


def _decode_error(e: Exception) -> InvalidItem:
    if isinstance(e, RecursionError):
        return InvalidItem(
            f"JSON nested too deeply to parse (about {sys.getrecursionlimit()} levels)",
            "too_deep",
        )
    text = str(e)
    if isinstance(e, msgspec.DecodeError) and not isinstance(e, msgspec.ValidationError):
        return InvalidItem(f"malformed JSON: {text}", "malformed_json")
    if "missing required field `title`" in text:
        return InvalidItem(f"invalid item: {text}; every new item needs a title", "missing_title")
    if "unknown field" in text.lower():
        return InvalidItem(f"invalid item: {text}", "unknown_field")
    return InvalidItem(f"invalid item: {text}", "invalid_field")


def check(write: ItemWrite) -> ItemWrite:
    """The rules the types cannot say: id rule, text lengths, categories, attributes."""
    problem = id_problem("item_id", write.item_id)
    if problem:
        raise InvalidItem(problem, "invalid_id")
    if isinstance(write, Delete):
        return write
    title = write.title
    if title is not None and not title.strip():
        raise InvalidItem("title is empty; every item needs a title", "missing_title")
    _check_len("title", title, MAX_TITLE_CHARS)
    _check_len("description", write.description, MAX_DESCRIPTION_CHARS)
    cats = write.categories
    if cats is not None:
        if len(cats) > MAX_CATEGORIES:
            raise InvalidItem(
                f"{len(cats)} categories; at most {MAX_CATEGORIES}", "too_many_categories"
            )
        for c in cats:
            if not c.strip() or len(c) > MAX_CATEGORY_CHARS or not c.isprintable():
                raise InvalidItem(
                    f"category {c[:80]!r}: 1-{MAX_CATEGORY_CHARS} printable characters",
                    "invalid_field",
                )
    attrs = write.attributes
    if attrs is not None:
        if len(attrs) > MAX_ATTRIBUTES:
            raise InvalidItem(f"{len(attrs)} attributes; at most {MAX_ATTRIBUTES}", "invalid_field")
        for k, v in attrs.items():
            if k in RESERVED or len(k) > MAX_CATEGORY_CHARS:
                raise InvalidItem(
                    f"attribute name {k[:80]!r} is reserved or too long", "invalid_field"
                )
            if isinstance(v, float) and not math.isfinite(v):
                raise InvalidItem(f"attribute {k!r} is not a finite number", "invalid_field")
            if isinstance(v, str) and len(v) > MAX_TITLE_CHARS:
                raise InvalidItem(
                    f"attribute {k!r} is {len(v)} characters; at most {MAX_TITLE_CHARS}",
                    "text_too_long",
                )
    return write


def _check_len(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidItem(f"{name} is {len(value)} characters; at most {limit}", "text_too_long")


RESERVED = frozenset(
    {
        "item_id",
        "title",
        "categories",
        "popularity",
        "model_version",
        "available",
        "description",
        "covisit",
        "runtime",
        "slot",
        "rev",
    }
)
"""Payload keys the store uses itself; attributes may not shadow them."""


# --- applying a write -----------------------------------------------------------------


def apply(base: ItemRecord | None, write: ItemWrite) -> ItemRecord | None:
    """The item after ``write``; ``base`` is the item as it stands (None: unknown).
    Returns None for a patch or delete of an unknown item (dead-lettered by the caller).
    Pure: the caller decides whether the text changed (``text_changed``)."""
    if isinstance(write, Upsert):
        return ItemRecord(
            item_id=write.item_id,
            title=write.title,
            categories=list(write.categories),
            popularity=base.popularity if base else 0.0,
            extra={
                **({"covisit": base.extra["covisit"]} if base and "covisit" in base.extra else {}),
                **write.attributes,
                "description": write.description,
                "available": write.available,
                "runtime": True,
            },
        )
    if base is None:
        return None
    if isinstance(write, Delete):
        return ItemRecord(
            base.item_id,
            base.title,
            list(base.categories),
            base.popularity,
            {**base.extra, "available": False, "runtime": True},
        )
    extra = dict(base.extra)
    if write.attributes is not None:
        extra = {k: v for k, v in extra.items() if k in RESERVED}
        extra.update(write.attributes)
    if write.description is not None:
        extra["description"] = write.description
    if write.available is not None:
        extra["available"] = write.available
    extra["runtime"] = True
    return ItemRecord(
        base.item_id,
        write.title if write.title is not None else base.title,
        list(write.categories) if write.categories is not None else list(base.categories),
        base.popularity,
        extra,
    )


def item_text(item: ItemRecord) -> str:
    """What the text encoder reads: ``"{title} ({year}). {description} Genres: {g1, g2}."``,
    leaving out the parts the record lacks. Training and runtime writes use this one."""
    year = item.extra.get("year")
    text = f"{item.title} ({year})." if year else f"{item.title}."
    description = item.extra.get("description")
    if description:
        text += f" {description}"
    if item.categories:
        text += f" Genres: {', '.join(item.categories)}."
    return text


def text_changed(before: ItemRecord | None, after: ItemRecord) -> bool:
    """Whether ``after`` needs a new text vector (and so a new item vector)."""
    return before is None or item_text(before) != item_text(after)


# --- the item tower's head, for items training never saw ---------------------------------


@dataclass(slots=True)
class ItemHead:
    """The trained item tower applied to an item without a learned id embedding.

    v = normalise(relu([text, id0, categories] W1 + b1) W2 + b2): ``text`` is the item's
    sentence-transformers vector, ``id0`` the shared embedding training's id dropout maps
    unseen items to, ``categories`` the multi-hot over ``category_names`` (a category the
    model never saw adds nothing). Numpy, so serving and the dataflow need no torch.
    """

    w1: np.ndarray  # (text_dim + id_dim + n_categories, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, dim)
    b2: np.ndarray  # (dim,)
    id0: np.ndarray  # (id_dim,)
    category_names: list[str]

    @property
    def text_dim(self) -> int:
        return int(self.w1.shape[0] - self.id0.shape[0] - len(self.category_names))

    def embed(self, text: np.ndarray, categories: Sequence[Sequence[str]]) -> np.ndarray:
        """(n, dim) float32 L2-normalised item vectors from (n, text_dim) text vectors."""
        n = len(categories)
        col = {c: j for j, c in enumerate(self.category_names)}
        cats = np.zeros((n, len(col)), dtype=np.float32)
        for i, names in enumerate(categories):
            for c in names:
                j = col.get(c)
                if j is not None:
                    cats[i, j] = 1.0
        ids = np.broadcast_to(self.id0, (n, self.id0.shape[0]))
        text = np.asarray(text, dtype=np.float32).reshape(n, self.text_dim)
        x = np.concatenate([text, ids, cats], axis=1)
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        out = (h @ self.w2 + self.b2).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.where(norms > 0, norms, 1.0)
        return unit

    def arrays(self) -> dict[str, np.ndarray]:
        """For ``np.savez``: the weights and the category names."""
        return {
            "w1": self.w1,
            "b1": self.b1,
            "w2": self.w2,
            "b2": self.b2,
            "id0": self.id0,
            "category_names": np.asarray(self.category_names, dtype=str),
        }

    @classmethod
    def from_arrays(cls, z: Any) -> ItemHead:
        w1, b1, w2, b2, id0 = (
            np.asarray(z[k], dtype=np.float32) for k in ("w1", "b1", "w2", "b2", "id0")
        )
        return cls(w1, b1, w2, b2, id0, [str(c) for c in z["category_names"]])


# --- where runtime items sit in a model version ----------------------------------------


@dataclass(slots=True)
class CatalogEntry:
    """An item as the runtime catalogue holds it, whatever the model: its record, its
    text vector (so a new model re-embeds it without the text encoder), its slot (its
    row after a version's trained items) and the revision that wrote it."""

    record: ItemRecord
    text_vector: np.ndarray
    slot: int
    rev: float = 0.0


TOMBSTONE = ItemRecord(item_id="", title="", categories=[], extra={"available": False})
"""What a slot row holds when its item is one of the version's trained items (the
trained row serves it): never a candidate, never listed."""


def place(
    entries: Sequence[CatalogEntry],
    trained: Sequence[ItemRecord],
    trained_vectors: np.ndarray,
    head: ItemHead | None,
) -> list[tuple[int, ItemRecord, np.ndarray]]:
    """The rows ``entries`` take in a version whose trained catalogue is ``trained``:
    ``(row, record, vector)``, trained items in place, the others at ``n + slot``.

    A trained item keeps its trained vector (learned with its id) unless its text
    changed; any other vector comes from the version's item tower ``head`` (without
    one, from the trained items sharing its categories)."""
    n = len(trained)
    index = {it.item_id: i for i, it in enumerate(trained)}
    out: list[tuple[int, ItemRecord, np.ndarray]] = []
    to_embed: list[tuple[int, ItemRecord, CatalogEntry]] = []
    dim = int(trained_vectors.shape[1])
    for e in entries:
        row = index.get(e.record.item_id)
        if row is None:
            to_embed.append((n + e.slot, e.record, e))
            continue
        base = trained[row]
        record = ItemRecord(
            e.record.item_id,
            e.record.title,
            list(e.record.categories),
            base.popularity,
            {
                **e.record.extra,
                **({"covisit": base.extra["covisit"]} if "covisit" in base.extra else {}),
            },
        )
        out.append((n + e.slot, TOMBSTONE, np.zeros(dim, dtype=np.float32)))
        if item_text(base) == item_text(record):
            out.append((row, record, trained_vectors[row]))
        else:
            to_embed.append((row, record, e))
    if to_embed:
        vectors = _embed(
            [e for _, _, e in to_embed], [r for _, r, _ in to_embed], trained, trained_vectors, head
        )
        out.extend((row, rec, v) for (row, rec, _), v in zip(to_embed, vectors, strict=True))
    return out


def _embed(
    entries: Sequence[CatalogEntry],
    records: Sequence[ItemRecord],
    trained: Sequence[ItemRecord],
    trained_vectors: np.ndarray,
    head: ItemHead | None,
) -> np.ndarray:
    """Item vectors from the item tower where there is one and the entry has a text
    vector it reads; else (no encoder, a model without a tower) the centroid of the
    trained items sharing a category, or of all of them."""
    out = np.empty((len(records), trained_vectors.shape[1]), dtype=np.float32)
    by_head = [
        i
        for i, e in enumerate(entries)
        if head is not None and e.text_vector.shape[0] == head.text_dim and e.text_vector.any()
    ]
    if by_head:
        assert head is not None
        text = np.stack([entries[i].text_vector for i in by_head])
        out[by_head] = head.embed(text, [records[i].categories for i in by_head])
    for i in sorted(set(range(len(records))) - set(by_head)):
        wanted = set(records[i].categories)
        mask = np.array([bool(wanted.intersection(t.categories)) for t in trained], dtype=bool)
        pool = trained_vectors[mask] if mask.any() else trained_vectors
        out[i] = normalize(pool.mean(axis=0)) if len(pool) else 0.0
    return out
