"""Browsing the live model's catalogue: title search, categories, users to try.

Everything here reads the in-memory catalogue of the version being served (no store
round trip per request), so a search is a scan of a few thousand titles (well under a
millisecond for MovieLens). Derived indexes are rebuilt when the version changes.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from api.service import UnknownCategory
from core.catalog import Catalog
from featurestore.store import FeatureStore

USERS_LISTED = 5000
"""GET /users pages through at most this many profiles (read once per model version)."""
USERS_REREAD_SECONDS = 60.0
"""The list is read again after this long, so a user erased through another API replica
leaves it (the replica that erased one drops it at once)."""


def fold_text(text: str) -> str:
    """Case- and accent-insensitive form, so "amelie" finds "Amélie"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Match:
    row: int
    tier: int
    """0: the item id itself; 1: the whole title; 2: the title starts with the query;
    3: every query word starts a title word; 4: every query word occurs in the title."""


@dataclass(frozen=True, slots=True)
class TitleIndex:
    version: str
    titles: list[str]
    """Folded titles, by catalogue row."""
    words: list[frozenset[str]]
    """Folded title words, by catalogue row (for whole-word prefix matches)."""

    @classmethod
    def build(cls, catalog: Catalog) -> TitleIndex:
        titles = [fold_text(it.title) for it in catalog.items]
        return cls(catalog.version, titles, [frozenset(_WORD.findall(t)) for t in titles])

    def matches(self, catalog: Catalog, query: str) -> list[Match]:
        q = fold_text(query).strip()
        tokens = _WORD.findall(q) or ([q] if q else [])
        out = []
        exact = catalog.index.get(query.strip())
        for row, title in enumerate(self.titles):
            if row == exact:
                out.append(Match(row, 0))
            elif all(t in title for t in tokens):
                if title == q:
                    tier = 1
                elif title.startswith(q):
                    tier = 2
                elif all(any(w.startswith(t) for w in self.words[row]) for t in tokens):
                    tier = 3
                else:
                    tier = 4
                out.append(Match(row, tier))
        return out


class Browser:
    """Search and browse over whatever catalogue ``current`` returns."""

    def __init__(self, current: Callable[[], Catalog], store: FeatureStore) -> None:
        self._current = current
        self._store = store
        self._lock = threading.Lock()
        self._index: TitleIndex | None = None
        self._users: tuple[str, list[tuple[str, int]]] | None = None
        self._users_read = 0.0

    def _title_index(self, catalog: Catalog) -> TitleIndex:
        with self._lock:
            if self._index is None or self._index.version != catalog.version:
                self._index = TitleIndex.build(catalog)
            return self._index

    def search(
        self, query: str | None, categories: tuple[str, ...], limit: int, offset: int
    ) -> tuple[Catalog, list[int], int]:
        """Rows of items whose title matches ``query`` (all items when empty) and that
        are in one of ``categories`` (any when empty): best match first, then the most
        popular. Returns the catalogue searched, the page of rows and the total.
        Raises UnknownCategory for a category the model does not have."""
        catalog = self._current()
        wanted = set(categories)
        if unknown := sorted(wanted.difference(catalog.category_names)):
            raise UnknownCategory(
                f"unknown categories {unknown} in model {catalog.version}; "
                f"known: {catalog.category_names[:50]}"
            )
        if query and query.strip():
            hits = self._title_index(catalog).matches(catalog, query)
        else:
            hits = [Match(row, 0) for row in range(len(catalog.items))]
        if wanted:
            hits = [m for m in hits if wanted.intersection(catalog.items[m.row].categories)]
        hits.sort(key=lambda m: (m.tier, -catalog.items[m.row].popularity, m.row))
        return catalog, [m.row for m in hits[offset : offset + limit]], len(hits)

    def users(self, limit: int, offset: int) -> tuple[str, list[tuple[str, int]], int]:
        """A page of users with a long-term profile in the live model, with how many
        items each had seen in training: users worth picking in a demo. Sorted by id;
        with more than USERS_LISTED profiles, that many of them (a stable sample).
        Returns the version, the page and how many profiles the version has."""
        version = self._current().version
        with self._lock:
            cached = self._users
        now = time.monotonic()
        if cached is None or cached[0] != version or now - self._users_read > USERS_REREAD_SECONDS:
            found = self._store.profile_users(version, USERS_LISTED)
            cached = (version, sorted(found, key=lambda u: natural_key(u[0])))
            with self._lock:
                self._users, self._users_read = cached, now
        record = self._store.model(version)
        total = record.profiles if record is not None else len(cached[1])
        return version, cached[1][offset : offset + limit], total

    def forget_user(self, user_id: str) -> None:
        """Leave an erased user out of the users listed, at once."""
        with self._lock:
            if self._users is not None:
                version, users = self._users
                self._users = (version, [u for u in users if u[0] != user_id])


def category_counts(catalog: Catalog) -> list[tuple[str, int]]:
    """Every category of the model with its number of items, by name."""
    counts = Counter(c for it in catalog.items for c in it.categories)
    return sorted(counts.items())


def natural_key(user_id: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order ("2" before "10"), then the rest alphabetically."""
    if user_id.isascii() and user_id.isdecimal():
        return (0, int(user_id))
    return (1, user_id)
