"""The CLI's view of a running system through its HTTP API (the typed ``client``
package), and how it renders what it read.

A running service holds the embedded store (one process may open it), so inspecting a
live system goes through the API: reads need a read key (or none while the server has no
read keys), publish/activate/rollback and erasure an admin key (``--api-key`` /
``RECSYS_API_KEY`` here).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from client import RecsysClient
from client import errors as client_errors
from client.models import ModelsOverview
from core.settings import Settings


class CliError(Exception):
    """A one-line message for the operator; the CLI prints it and exits non-zero.
    ``status``: the API's HTTP status when the API refused the call (0 otherwise)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ApiUnreachable(CliError):
    """Nothing answers at the API URL."""


def default_api_url(settings: Settings) -> str:
    host = settings.api.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}"


KEY_HINTS = {
    "read": "a read key (RECSYS_API_READ_KEYS on the server)",
    "write": "a write or admin key (RECSYS_API_WRITE_KEYS on the server)",
    "admin": "an admin key (RECSYS_API_ADMIN_KEYS on the server)",
}


@contextmanager
def api_client(
    url: str, api_key: str | None, scope: str = "read", timeout: float = 10.0
) -> Iterator[RecsysClient]:
    """The typed client; its errors as CliError, each one line saying what to set.
    ``scope``: the key the calls need, named in a 401/403's message."""
    try:
        with RecsysClient(url, api_key, timeout=timeout) as client:
            yield client
    except client_errors.ApiUnreachable as e:
        raise ApiUnreachable(f"{e} Point --api-url (RECSYS_API_URL) at it.") from None
    except client_errors.AuthError as e:
        given = "a key that may not do this" if api_key else "no key"
        raise CliError(
            f"{e} ({given}: set RECSYS_API_KEY or pass --api-key with {KEY_HINTS[scope]})",
            e.status,
        ) from None
    except client_errors.ApiError as e:
        raise CliError(str(e), e.status) from None


# --- rendering ----------------------------------------------------------------------


def format_user(user: dict[str, Any], recs: dict[str, Any] | None) -> str:
    """A user's real-time features (GET /users/{id}) and their recommendations, for people."""
    lines = [
        f"user {user['user_id']}: {user['event_count']} events folded"
        + (f" ({user['unknown_items']} on unknown items)" if user.get("unknown_items") else "")
        + f", last at {user.get('last_event_time') or '-'}",
        f"  model {user.get('model_version') or '-'}, long-term profile: "
        f"{'yes' if user.get('has_long_term_profile') else 'no'}, "
        f"real-time mass {user.get('realtime_mass', 0.0):.2f}",
    ]
    session = user.get("session") or {}
    if session.get("id") or session.get("events"):
        lines.append(
            f"  session {session.get('id') or '-'} since {session.get('start') or '-'}, "
            f"{session.get('events', 0)} events"
        )
    cats = sorted((user.get("categories") or {}).items(), key=lambda kv: -kv[1])[:6]
    if cats:
        lines.append("  categories: " + ", ".join(f"{c} {share:.0%}" for c, share in cats))
    recent = user.get("recent") or []
    if recent:
        lines.append("  recent:")
        for e in recent[:10]:
            title = f"  {e['title']}" if e.get("title") else ""
            lines.append(f"    {e['time']}  {e['event_type']:<11} {e['item_id']}{title}")
    if recs is not None:
        lines.append(
            f"  recommendations ({recs.get('strategy')}, real-time weight "
            f"{recs.get('realtime_weight', 0.0):.0%}, model {recs.get('model_version') or '-'}):"
        )
        for n, it in enumerate(recs.get("items", []), 1):
            reason = (it.get("reasons") or [""])[0]
            lines.append(
                f"    {n:>2}. {it.get('title', it['item_id'])[:40]:<40} {it['score']:.3f}  {reason}"
            )
    return "\n".join(lines)


def format_erasure(erased: dict[str, Any]) -> str:
    """What DELETE /users/{id} removed, in one line."""
    removed = []
    if erased.get("removed_user_state"):
        removed.append("real-time features")
    if erased.get("removed_profiles"):
        removed.append("long-term profile (" + ", ".join(erased["removed_profiles"]) + ")")
    m = erased["marker"]
    return (
        f"erased user {erased['user_id']}: deleted "
        + (" and ".join(removed) or "nothing stored (none yet, or erased before)")
        + f"; erasure marker at {m['topic']} partition {m['partition']} offset {m['offset']}"
    )


def format_models(overview: ModelsOverview) -> str:
    """The published versions, oldest first, with their held-out Recall@10 against the
    popularity baseline's (the same check, the most popular items)."""
    head = f"active: {overview.active or '-'}"
    if overview.serving is not None:
        head += f", served by this API: {overview.serving}"
    rows = [head]
    if not overview.models:
        rows.append("no model published; train one with `recsys train`")
    for m in overview.models:
        held = m.held_out
        quality = ""
        if held.recall_at_10 is not None:
            quality = f", held-out recall@10 {held.recall_at_10:.4f}"
            if held.popularity_recall_at_10 is not None:
                quality += f" (popularity {held.popularity_recall_at_10:.4f})"
        rows.append(
            f"{'*' if m.active else ' '} {m.version}  trained {m.created_at}  "
            f"{m.items} items, {m.profiles} profiles{quality}"
        )
    return "\n".join(rows)
