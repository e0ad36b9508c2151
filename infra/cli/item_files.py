"""JSON-lines files of catalogue items for `recsys items add --file`: every line checked
with the items contract (``core.items``) before anything is sent, then cut into requests
of at most ``MAX_BATCH`` items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core import items

MAX_REPORTED = 5
"""Invalid lines named in the error."""


def read_items(path: Path, batch: int = items.MAX_BATCH) -> list[list[dict[str, Any]]]:
    """The file's items (one POST /items item per non-blank line) in batches of ``batch``.
    Raises ValueError, one line naming the invalid lines and why, if any line is."""
    if not path.is_file():
        raise ValueError(f"item file {path} does not exist")
    good: list[dict[str, Any]] = []
    bad: list[str] = []
    count = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                good.append(_item(raw))
            except items.InvalidItem as e:
                count += 1
                if len(bad) < MAX_REPORTED:
                    bad.append(f"line {n}: {e} [{e.kind}]")
    if count:
        raise ValueError(f"{count} invalid line(s) in {path}, nothing sent: " + "; ".join(bad))
    if not good:
        raise ValueError(f"no items in {path}")
    return [good[i : i + batch] for i in range(0, len(good), batch)]


def _item(raw: bytes) -> dict[str, Any]:
    """One line: one item, checked by the contract; returned as the JSON object it is."""
    if raw.lstrip().startswith(b"["):
        raise items.InvalidItem("one item per line, not a list", "invalid_field")
    items.decode_upserts(raw)
    item: dict[str, Any] = json.loads(raw)
    return item
