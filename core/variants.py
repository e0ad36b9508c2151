"""Deterministic A/B bucketing of users between named ranking configurations."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from core.ranking import RankParams


def bucket(user_id: str, names: Sequence[str], salt: str) -> str:
    """The same user always lands in the same variant (for a given salt and variant set),
    and users spread evenly: a stable hash, not Python's per-process salted ``hash``."""
    if len(names) == 1:
        return names[0]
    h = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return names[int.from_bytes(h, "big") % len(names)]


def variant_params(
    base: RankParams, variants: Mapping[str, Mapping[str, float]]
) -> dict[str, RankParams]:
    """Each variant's RankParams: the base with the variant's overrides."""
    known = {f.name for f in fields(RankParams)}
    for name, over in variants.items():
        bad = sorted(set(over) - known)
        if bad:
            raise ValueError(
                f"RECSYS_RANKING_VARIANTS: variant {name!r} sets unknown parameters {bad}; "
                f"known: {sorted(known)}"
            )
    # Values are checked by name above; a float for an int parameter is the caller's.
    return {name: _with(base, over) for name, over in sorted(variants.items())}


def _with(base: RankParams, over: Mapping[str, Any]) -> RankParams:
    return replace(base, **over)
