"""What a call can fail with; each message is one line that says what to do."""

from __future__ import annotations


class ApiError(Exception):
    """The API answered with an error status (``status``), or not at all (0)."""

    def __init__(
        self, message: str, status: int = 0, detail: str = "", kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.kind = kind
        """The rule a refused catalogue write broke (422 of /items: ``missing_title``, ...)."""


class ApiUnreachable(ApiError):
    """Nothing answers at the base URL."""


class AuthError(ApiError):
    """401/403: no key, or a key without the scope the endpoint needs."""


class NotFound(ApiError):
    """404: no such user, item or model version."""
