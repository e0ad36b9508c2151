"""API keys (X-API-Key) for writes, admin and, when configured, reads."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

from core.settings import Settings

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def _matches(key: str, keys: Iterable[str]) -> bool:
    # Compare against every key, in constant time per key.
    return any([hmac.compare_digest(key.encode(), k.encode()) for k in keys])


def require_key(settings: Settings, scope: str) -> Callable[[str | None], None]:
    """A FastAPI dependency: ``scope`` is "read", "write" or "admin"; a wider key passes a
    narrower check (admin > write > read)."""
    admin = settings.api.admin_keys
    accepted = {
        "admin": admin,
        "write": settings.api.write_keys | admin,
        "read": settings.api.read_keys | settings.api.write_keys | admin,
    }[scope]
    required = {
        "admin": True,
        "write": bool(settings.api.write_keys),
        "read": bool(settings.api.read_keys),
    }[scope]

    def check(key: str | None = Security(_header)) -> None:
        if not required:
            return
        if scope == "admin" and not admin:
            raise HTTPException(403, "admin endpoints are disabled: set RECSYS_API_ADMIN_KEYS")
        if key is None:
            raise HTTPException(401, f"this endpoint needs a {scope} API key in X-API-Key")
        if not _matches(key, accepted):
            raise HTTPException(401, f"the X-API-Key given is not a {scope} key")

    return check
