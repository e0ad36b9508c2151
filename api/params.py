"""Path and query parameters shared by several routes, and the checks FastAPI's own
validation cannot express."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path, Query

MAX_CATEGORY_CHARS = 100
MAX_QUERY_CHARS = 200
MAX_PAGE_ITEMS = 100

# Ids are any printable string (no control characters), at most 256 characters.
_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
UserId = Annotated[
    str, Path(min_length=1, max_length=256, pattern=_ID_PATTERN, description="Any user id string")
]
ItemId = Annotated[str, Path(min_length=1, max_length=256, pattern=_ID_PATTERN)]
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Version = Annotated[str, Path(pattern=VERSION_PATTERN)]

CategoryFilter = Annotated[
    list[str] | None,
    Query(description="Only items in at least one of these categories (repeatable)"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def checked_categories(values: list[str] | None, name: str, limit: int) -> tuple[str, ...]:
    """The category names of a filter, deduplicated in order; 422 for too many or a name
    of the wrong length."""
    if not values:
        return ()
    if len(values) > limit:
        raise HTTPException(422, f"at most {limit} values of {name}")
    for v in values:
        if not 0 < len(v) <= MAX_CATEGORY_CHARS:
            raise HTTPException(
                422, f"{name} values must have 1 to {MAX_CATEGORY_CHARS} characters"
            )
    return tuple(dict.fromkeys(values))
