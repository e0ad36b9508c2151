"""Collection layout and point ids, shared by both adapters.

    items__<version>     item vectors (Dot on L2-normalised vectors) + title, categories, popularity;
                         point ids are 1..n in catalogue order, so a hit maps to a row directly
    profiles__<version>  long-term user vectors from the offline model + items seen in training
    user_state           real-time user vector (raw decayed sum) + session features
    item_trends          decayed event counts per item (for cold users)
    models               the registry: one point per published version + the active pointer
    catalog_items        items written at runtime (POST/PATCH/DELETE /items), whatever the model:
                         the record, its text vector (what the item tower reads) and its slot
    erasures             erased users (point id = the user's point id, no user id stored): the
                         events-topic offsets up to which their events are ignored

Item and profile collections are per model version, so a new model is written beside
the old one and switched to atomically by moving the active pointer. A version's items
collection holds its trained items at rows 1..n and the runtime items after them, each at
row n + slot + 1 (slots are numbered once per item id, so every writer puts an item at
the same row); a runtime item a version has trained leaves its slot row as a tombstone.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache

USER_STATE = "user_state"
ITEM_TRENDS = "item_trends"
MODELS = "models"
ERASURES = "erasures"
CATALOG = "catalog_items"

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NS_BYTES = uuid.UUID("6f1c1d1e-8a0b-4c7e-9d55-3f0a2b7e4c10").bytes


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid model version {version!r}: use letters, digits, '_', '-', '.'")
    return version


def items_collection(version: str) -> str:
    return f"items__{check_version(version)}"


PROFILES_PREFIX = "profiles__"


def profiles_collection(version: str) -> str:
    return f"{PROFILES_PREFIX}{check_version(version)}"


@lru_cache(maxsize=1 << 18)
def point_id(kind: str, key: str) -> str:
    """Qdrant accepts integers or UUIDs as ids; any string id maps to a stable UUID: the
    name-based UUID version 5 of ``kind:key`` (RFC 9562), computed without building a
    ``uuid.UUID`` (a third of the cost; every user write outside the cache pays it)."""
    h = bytearray(hashlib.sha1(_NS_BYTES + f"{kind}:{key}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def user_point(user_id: str) -> str:
    return point_id("user", user_id)


def item_point(item_id: str) -> str:
    return point_id("item", item_id)


ACTIVE_POINT = point_id("meta", "active")


def model_point(version: str) -> str:
    return point_id("model", version)


def item_head_point(version: str) -> str:
    """In ``models``: the version's item-tower head (``core.items.ItemHead``)."""
    return point_id("item_head", version)


def rows_point(version: str) -> str:
    """In ``models``: how many rows the version's items collection holds (trained and
    runtime) and its revision, which grows with every runtime row written."""
    return point_id("rows", version)


CATALOG_META_POINT = point_id("meta", "catalog")
"""In ``models``: the runtime catalogue's next free slot and its revision."""


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    dim: int
    keyword_indexes: tuple[str, ...] = ()
    float_indexes: tuple[str, ...] = ()
    bool_indexes: tuple[str, ...] = ()
    searchable: bool = False
    """Searched by vector (gets an HNSW graph); the others are only read by id."""


# Payload-only collections still need a vector in Qdrant Edge; one float is the cheapest.
PAYLOAD_ONLY_DIM = 1


def spec_for(name: str, dim: int) -> CollectionSpec:
    if name.startswith("items__"):
        # `categories` and `available` serve request-time filters inside the ANN search.
        return CollectionSpec(
            dim,
            keyword_indexes=("item_id", "categories"),
            float_indexes=("rev",),
            bool_indexes=("available",),
            searchable=True,
        )
    if name.startswith("profiles__"):
        return CollectionSpec(dim, keyword_indexes=("user_id",))
    if name == USER_STATE:
        # Read by id only: an index would cost every dataflow write ~6 us and serve nothing.
        return CollectionSpec(dim)
    if name == ITEM_TRENDS:
        return CollectionSpec(PAYLOAD_ONLY_DIM, float_indexes=("score",))
    if name == CATALOG:
        return CollectionSpec(dim, keyword_indexes=("item_id",), float_indexes=("rev",))
    if name in (MODELS, ERASURES):
        return CollectionSpec(PAYLOAD_ONLY_DIM)
    raise ValueError(f"unknown collection {name!r}")
