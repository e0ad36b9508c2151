"""API keys (X-API-Key) for writes, admin and, when configured, reads."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import HTTPException
from fastapi.security import APIKeyHeader

from core.settings import ApiSettings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def _matches(key: str, keys: Iterable[str]) -> bool:
    # Compare against every key, in constant time per key.
    return any([hmac.compare_digest(key.encode(), k.encode()) for k in keys])


class ApiKeys:
    """The keys each scope ("read", "write", "admin") accepts: a wider key passes a
    narrower check (admin > write > read).

    Writes fail closed: once any key is configured (read, write or admin), every write
    needs a write or admin key; only with no key at all are writes open (development,
    ``writes_open``). Reads are open until read keys are configured; admin endpoints are
    disabled until admin keys are."""

    def __init__(self, api: ApiSettings) -> None:
        admin = api.admin_keys
        self._admin_enabled = bool(admin)
        self._accepted = {
            "admin": admin,
            "write": api.write_keys | admin,
            "read": api.read_keys | api.write_keys | admin,
        }
        self.writes_open = not (api.read_keys or api.write_keys or admin)
        self._required = {
            "admin": True,
            "write": not self.writes_open,
            "read": bool(api.read_keys),
        }

    def check(self, scope: str, key: str | None) -> None:
        """Pass, or raise the 401/403 that says what is missing."""
        if not self._required[scope]:
            return
        if scope == "admin" and not self._admin_enabled:
            raise HTTPException(403, "admin endpoints are disabled: set RECSYS_API_ADMIN_KEYS")
        if not self._accepted[scope]:  # writes, with only read keys configured
            raise HTTPException(
                403,
                f"{scope}s are disabled: keys are configured but no {scope} key is "
                f"(set RECSYS_API_{scope.upper()}_KEYS)",
            )
        if key is None:
            raise HTTPException(401, f"this endpoint needs a {scope} API key in X-API-Key")
        if not _matches(key, self._accepted[scope]):
            raise HTTPException(401, f"the X-API-Key given is not a {scope} key")
