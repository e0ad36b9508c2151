"""``RecsysClient``: one method per endpoint, typed results, one-line errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from client.errors import ApiError, ApiUnreachable, AuthError, NotFound
from client.models import (
    Erasure,
    Health,
    ItemsAccepted,
    ModelsOverview,
    Recommendations,
    SimilarItems,
    UserFeatures,
)

T = TypeVar("T", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8000"


class RecsysClient:
    """The API at ``base_url``; ``api_key`` goes in the X-API-Key header (a read, write or
    admin key as the endpoint needs; none while the server has no keys configured)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> RecsysClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- reads -------------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        categories: Iterable[str] = (),
        exclude_categories: Iterable[str] = (),
        explain: bool = False,
        diversity: float | None = None,
    ) -> Recommendations:
        """GET /recommendations/{user_id}."""
        params: dict[str, Any] = {"k": k, "category": list(categories)}
        params["exclude_category"] = list(exclude_categories)
        if explain:
            params["explain"] = "true"
        if diversity is not None:
            params["diversity"] = diversity
        return self._call(Recommendations, "GET", f"/recommendations/{_id(user_id)}", params=params)

    def similar(
        self,
        item_id: str,
        k: int = 10,
        *,
        categories: Iterable[str] = (),
        exclude_categories: Iterable[str] = (),
        available_only: bool = True,
    ) -> SimilarItems:
        """GET /items/{item_id}/similar: items like this one, each with a reason."""
        params: dict[str, Any] = {"k": k, "category": list(categories)}
        params["exclude_category"] = list(exclude_categories)
        if not available_only:
            params["available_only"] = "false"
        return self._call(SimilarItems, "GET", f"/items/{_id(item_id)}/similar", params=params)

    def user(self, user_id: str) -> UserFeatures:
        """GET /users/{user_id}: the user's real-time features."""
        return self._call(UserFeatures, "GET", f"/users/{_id(user_id)}")

    def models(self) -> ModelsOverview:
        """GET /models: published versions, training date, held-out metrics (read key)."""
        return self._call(ModelsOverview, "GET", "/models")

    def health(self) -> Health:
        """GET /healthz: the process is up."""
        return self._call(Health, "GET", "/healthz")

    def ready(self) -> Health:
        """GET /readyz: what keeps the service from being ready (503 is an answer here)."""
        r = self._send("GET", "/readyz")
        if r.status_code not in (200, 503):
            raise _error(r, "/readyz")
        return Health.model_validate(r.json())

    # --- writes ------------------------------------------------------------------------

    def post_events(self, events: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> int:
        """POST /events (one event or a list); the number accepted (write key)."""
        body = dict(events) if isinstance(events, Mapping) else [dict(e) for e in events]
        r = self._send("POST", "/events", json=body)
        if r.status_code >= 400:
            raise _error(r, "/events")
        return int(r.json()["accepted"])

    def add_items(self, items: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> ItemsAccepted:
        """POST /items: add items or replace them whole (one, or a list of up to 1,000),
        each ``{"item_id", "title", "description", "categories", "available",
        "attributes"}`` (write key). A refused item: ``ApiError`` with ``status`` 422 and
        the rule's ``kind``."""
        body = dict(items) if isinstance(items, Mapping) else [dict(i) for i in items]
        return self._call(ItemsAccepted, "POST", "/items", json=body)

    def update_item(self, item_id: str, **fields: Any) -> ItemsAccepted:
        """PATCH /items/{item_id}: change the given fields (``title``, ``description``,
        ``categories``, ``available``, ``attributes``); the others stay (write key)."""
        return self._call(ItemsAccepted, "PATCH", f"/items/{_id(item_id)}", json=fields)

    def remove_item(self, item_id: str) -> ItemsAccepted:
        """DELETE /items/{item_id}: take the item out of recommendations; it stays in the
        catalogue, unavailable (write key)."""
        return self._call(ItemsAccepted, "DELETE", f"/items/{_id(item_id)}")

    def delete_user(self, user_id: str) -> Erasure:
        """DELETE /users/{user_id}: erase the user (admin key)."""
        return self._call(Erasure, "DELETE", f"/users/{_id(user_id)}")

    def publish(self, version: str | None = None, activate: bool = True) -> ModelsOverview:
        """POST /admin/models/publish: a trained version (default LATEST) (admin key)."""
        body = {"version": version, "activate": activate}
        return self._call(ModelsOverview, "POST", "/admin/models/publish", json=body)

    def activate(self, version: str) -> ModelsOverview:
        """POST /admin/models/{version}/activate: make it live, or roll back (admin key)."""
        return self._call(ModelsOverview, "POST", f"/admin/models/{_id(version)}/activate")

    # --- plumbing ----------------------------------------------------------------------

    def _call(self, kind: type[T], method: str, path: str, **kw: Any) -> T:
        r = self._send(method, path, **kw)
        if r.status_code >= 400:
            raise _error(r, path)
        return kind.model_validate(r.json())

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ApiUnreachable(
                f"cannot reach the API at {self.base_url} ({e}); is `recsys serve` (or "
                "`recsys api`) running there?"
            ) from None
        except httpx.HTTPError as e:
            raise ApiError(f"{method} {self.base_url}{path} failed: {e}") from None


def _id(segment: str) -> str:
    """An id as one URL path segment."""
    return quote(segment, safe="")


def _error(r: httpx.Response, path: str) -> ApiError:
    detail = _detail(r)
    message = f"{r.status_code} from {r.request.url.copy_with(query=None)}: {detail}"
    if r.status_code in (401, 403):
        return AuthError(message, r.status_code, detail)
    if r.status_code == 404:
        return NotFound(message, r.status_code, detail)
    return ApiError(message, r.status_code, detail, _kind(r))


def _kind(r: httpx.Response) -> str | None:
    try:
        kind = r.json().get("kind")
    except (ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        return r.text.strip()[:200] or r.reason_phrase
    return detail if isinstance(detail, str) else str(detail)[:300]
