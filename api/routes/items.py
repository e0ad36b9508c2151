"""The live model's items: one item, the items similar to it, a search or browse page,
and the categories."""

# No ``from __future__ import annotations``: the similar route's parameter types are built
# in ``similar_router`` (per settings), where FastAPI could not resolve them from strings.
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

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
from api.routes.recommendations import AvailableOnly, ExcludeCategories, build_item_filter
from api.similar import SimilarResult, UnknownItem, similar_items
from core.settings import Settings

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


class SimilarItem(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    score: float = Field(description="similarity + the co-visitation term; best first")
    similarity: float = Field(description="Cosine of the two items' vectors")
    covisit: float = Field(
        description="How often the two were picked one right after the other in training "
        "(0..1; 0: never)"
    )
    reason: str = Field(description='"often picked with X" or "similar to X"')


class SimilarItems(BaseModel):
    item_id: str
    title: str
    model_version: str
    items: list[SimilarItem]

    @classmethod
    def from_result(cls, result: SimilarResult) -> "SimilarItems":
        items = result.catalog.items
        return cls(
            item_id=result.item.item_id,
            title=result.item.title,
            model_version=result.catalog.version,
            items=[
                SimilarItem(
                    item_id=(it := items[s.row]).item_id,
                    title=it.title,
                    categories=it.categories,
                    score=round(s.score, 6),
                    similarity=round(s.similarity, 6),
                    covisit=round(s.covisit, 6),
                    reason=s.reason,
                )
                for s in result.items
            ],
        )


def similar_router(settings: Settings) -> APIRouter:
    """Built per settings: the schema states the largest k this deployment serves."""
    K = Annotated[int, Query(ge=1, le=settings.api.max_k, description="How many items")]
    similar = APIRouter(tags=["recommend"], dependencies=[require_read])

    @similar.get("/items/{item_id}/similar", response_model=SimilarItems)
    def similar_to(
        item_id: ItemId,
        recommender: RecommenderDep,
        k: K = 10,
        category: CategoryFilter = None,
        exclude_category: ExcludeCategories = None,
        available_only: AvailableOnly = True,
    ) -> SimilarItems:
        """Items like this one: nearest by the live model's item vectors, blended with the
        items picked right before or after it in training, under the same filters as
        recommendations; never the item itself. Unknown item: 404."""
        item_filter = build_item_filter(settings, category, exclude_category, available_only)
        try:
            result = similar_items(recommender, item_id, k, item_filter)
        except UnknownItem as e:
            raise HTTPException(404, str(e)) from None
        return SimilarItems.from_result(result)

    return similar
