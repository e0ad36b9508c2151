"""What the `recsys` commands share: the API options, settings, one-line errors."""

from __future__ import annotations

from typing import Annotated

import typer

from core.settings import Settings, get_settings

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="RECSYS_API_URL",
        help="The service's base URL (default: http://RECSYS_API_HOST:RECSYS_API_PORT).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="RECSYS_API_KEY",
        help="X-API-Key to send (an admin key for `models` and `user delete`).",
        show_default=False,
    ),
]


def settings() -> Settings:
    return get_settings()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (no traceback) and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def exit_with(code: int | None) -> None:
    """Exit with an entry point's non-zero return code; return on 0 or None."""
    if code:
        raise typer.Exit(code)
