"""The live demo page at ``/demo``: static HTML/JS/CSS shipped inside the package.

The page talks to the public API only (``/items``, ``/users``, ``/events``, ``/models``,
``/recommendations``), so it shows exactly what any client would get. Its Content
Security Policy allows this origin alone: nothing is fetched from elsewhere at run time.
The page and its assets are not part of the API, so not in OpenAPI.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent.parent / "static" / "demo"
ASSETS_PATH = "/demo/assets"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    """The page's assets, for mounting at ``ASSETS_PATH``."""
    if not (STATIC_DIR / "index.html").is_file():
        raise RuntimeError(f"the demo page is missing from {STATIC_DIR}: reinstall the package")
    return StaticFiles(directory=STATIC_DIR)


@router.get("/demo")
def demo_page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )
