"""Offsets belong to one incarnation of the events topic.

A recreated topic (an operator deleted and created it, or the in-memory dev broker
restarted) counts its offsets from 0 again, so the offsets a state remembers from an
earlier incarnation would make the fold skip new events as replays. Each state carries
the id of the incarnation its offsets count in (``eventlog.admin.events_log_id``).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from core.state import Trend, UserState

log = logging.getLogger(__name__)


def adopt_log(state: UserState | Trend, log_id: str | None) -> bool:
    """Tie ``state``'s offsets to the events topic incarnation ``log_id``.

    Offsets remembered under another id would skip the new topic's events as replays:
    they are dropped. With no id (a broker without topic ids) offsets are trusted as they
    are, and so are those of a state stored without an id: dropping them would count a
    re-read of the same topic twice. True if offsets were dropped.
    """
    if log_id is None or state.log_id == log_id:
        return False
    dropped = state.log_id is not None and bool(state.offsets)
    if dropped:
        state.offsets = {}
    state.log_id = log_id
    return dropped


class Incarnation:
    """The events topic incarnation one flow reads; None: unknown, offsets not checked.

    Shared by the flow's stateful steps, so a new incarnation is logged once per flow,
    not once per key; ``recsys_offsets_reset_total`` counts the keys.
    """

    def __init__(self, log_id: str | None = None) -> None:
        self.log_id = log_id
        self._warned = False

    def adopt(self, state: UserState | Trend, key: str, resets: Counter) -> None:
        """``adopt_log`` for one key's state; counts the key in ``resets`` if offsets
        were dropped. Callers skip the call when ``state.log_id`` is already ours."""
        if not adopt_log(state, self.log_id):
            return
        resets.inc()
        if not self._warned:
            self._warned = True
            log.warning(
                "events topic has a new id %s: offsets remembered from an earlier "
                "incarnation are dropped (first key: %s); recsys_offsets_reset_total "
                "counts the keys",
                self.log_id,
                key,
            )
