"""A small typed Python client for the recommendation API (httpx + pydantic).

    from client import RecsysClient

    with RecsysClient("http://127.0.0.1:8000", api_key=None) as api:
        recs = api.recommend("405", k=5)
        print([item.title for item in recs.items])
        api.post_events({"event_type": "view", "user_id": "405", "item_id": "50"})
        api.add_items({"item_id": "m-1", "title": "Heat", "categories": ["Crime"]})

Every method returns the response as a typed object mirroring the OpenAPI document
(``/openapi.json``, the contract) and raises an ``ApiError`` with a one-line message for
an error status or an unreachable service. It imports nothing else of this project.
"""

from client.errors import ApiError, ApiUnreachable, AuthError, NotFound
from client.http import RecsysClient
from client.models import (
    Erasure,
    Health,
    HeldOut,
    Item,
    ItemsAccepted,
    ModelsOverview,
    ModelVersion,
    Recommendations,
    SimilarItem,
    SimilarItems,
    UserFeatures,
)

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "AuthError",
    "Erasure",
    "Health",
    "HeldOut",
    "Item",
    "ItemsAccepted",
    "ModelVersion",
    "ModelsOverview",
    "NotFound",
    "Recommendations",
    "RecsysClient",
    "SimilarItem",
    "SimilarItems",
    "UserFeatures",
]
