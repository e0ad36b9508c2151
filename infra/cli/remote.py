"""The CLI's view of a running system: its HTTP API, or the store directly when none runs.

A running service holds the embedded store (one process may open it), so inspecting a
live system goes through the API; the admin endpoints need an admin key
(``RECSYS_API_ADMIN_KEYS`` on the server, ``--api-key`` / ``RECSYS_API_KEY`` here).
"""

from __future__ import annotations

from typing import Any

import httpx

from core.settings import Settings


class CliError(Exception):
    """A one-line message for the operator; the CLI prints it and exits non-zero."""


class ApiUnreachable(CliError):
    """Nothing answers at the API URL."""


def default_api_url(settings: Settings) -> str:
    host = settings.api.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}"


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ApiUnreachable(
                f"cannot reach the API at {self.base_url} ({e}); is `recsys serve` (or "
                "`recsys api`) running? Point --api-url (RECSYS_API_URL) at it."
            ) from None
        except httpx.HTTPError as e:
            raise CliError(f"{method} {self.base_url}{path} failed: {e}") from None
        if r.status_code < 400:
            return r.json()
        detail = _detail(r)
        if r.status_code in (401, 403):
            raise CliError(
                f"{r.status_code} from {self.base_url}{path}: {detail} "
                "(pass a key with --api-key or RECSYS_API_KEY)"
            )
        raise CliError(f"{r.status_code} from {self.base_url}{path}: {detail}")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        return r.text.strip()[:200] or r.reason_phrase
    return detail if isinstance(detail, str) else str(detail)[:300]


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


def format_models(overview: dict[str, Any]) -> str:
    """The model registry (GET /admin/models, or the store), newest last."""
    rows = [f"active: {overview.get('active') or '-'}"]
    if overview.get("serving") is not None:
        rows[0] += f", served by this API: {overview['serving']}"
    models = overview.get("models") or []
    if not models:
        rows.append("no model published; train one with `recsys train`")
    for m in models:
        mark = "*" if m["version"] == overview.get("active") else " "
        metrics = m.get("metrics") or {}
        recall = metrics.get("recall_at_10")
        rows.append(
            f"{mark} {m['version']}  created {m.get('created_at') or '-'}  "
            f"{m.get('items', 0)} items, {m.get('profiles', 0)} profiles"
            + (f", recall@10 {recall:.3f}" if isinstance(recall, (int, float)) else "")
        )
    return "\n".join(rows)
