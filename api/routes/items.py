"""The live model's items: one item, a search or browse page, and the categories."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.browse import category_counts
from api.deps import BrowserDep, RecommenderDep, SettingsDep, require_read
from api.params import (
    MAX_QUERY_CHARS,
    CategoryFilter,
    ItemId,
    Limit,
    Offset,
    checked_categories,
)
from api.responses import Categories, CategoryCount, Item, ItemPage, ItemSummary

router = APIRouter(tags=["features"], dependencies=[require_read])


@router.get("/items/{item_id}", response_model=Item)
def item(item_id: ItemId, recommender: RecommenderDep) -> Item:
    catalog = recommender.catalog()
    row = catalog.index.get(item_id)
    if row is None:
        raise HTTPException(404, f"item {item_id!r} is not in model {catalog.version}")
    it = catalog.items[row]
    return Item(
        item_id=it.item_id,
        title=it.title,
        categories=it.categories,
        popularity=it.popularity,
        model_version=catalog.version,
        extra=it.extra,
    )


@router.get("/items", response_model=ItemPage)
def items(
    settings: SettingsDep,
    browser: BrowserDep,
    q: Annotated[
        str | None,
        Query(max_length=MAX_QUERY_CHARS, description="Words to find in item titles"),
    ] = None,
    category: CategoryFilter = None,
    limit: Limit = 24,
    offset: Offset = 0,
) -> ItemPage:
    """Browse or search the live model's items: title search (case and accents
    ignored; every word must occur) ranked by match quality, then popularity."""
    wanted = checked_categories(category, "category", settings.api.max_filter_categories)
    catalog, rows, total = browser.search(q, wanted, limit, offset)  # unknown category: 422
    return ItemPage(
        model_version=catalog.version,
        total=total,
        offset=offset,
        items=[
            ItemSummary(
                item_id=(it := catalog.items[row]).item_id,
                title=it.title,
                categories=it.categories,
                popularity=round(it.popularity, 4),
            )
            for row in rows
        ],
    )


@router.get("/categories", response_model=Categories)
def categories(recommender: RecommenderDep) -> Categories:
    """Every category of the live model, with its number of items."""
    catalog = recommender.catalog()
    return Categories(
        model_version=catalog.version,
        categories=[CategoryCount(name=n, items=c) for n, c in category_counts(catalog)],
    )
