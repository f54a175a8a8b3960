"""Each viewer's retrieved candidates (`sona_jax.serve.retrieval`), kept on this process between
their requests so a request only pays for ranking.

An entry is keyed by what the candidates were made from: the viewer, their profile's version
(model version, stored events, adapter revision: any event, dismissal or training changes it)
and whether watched items were excluded. Items deleted since are masked at request time and
items added since get their own slots. Trending and popularity move with every table refresh:
a viewer still blended with cold start (popularity in their genres is much of their list) keys
on the tables too, so the next refresh retires their entry; a warm viewer's candidates only
gain trending items from them, so theirs is retired after ``max_age`` seconds. Only the event
loop touches it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable

from sona_jax.config import SonaConfig
from sona_jax.serve.batch import ViewerCandidates, ViewerProfile
from sona_jax.serve.engine import ServingEngine


def candidate_key(
    user_id: str,
    version_parts: Hashable,
    profile: ViewerProfile,
    exclude_watched: bool,
    engine: ServingEngine,
    cfg: SonaConfig,
) -> Hashable:
    """What ``user_id``'s candidates are made from: their profile's version, the exclusion, and
    for a viewer below ``cold_start.blend_events`` qualifying events the engine's tables."""
    cold = profile.qualifying < cfg.cold_start.blend_events
    return (user_id, version_parts, exclude_watched, engine.tables if cold else None)


class CandidateCache:
    """An LRU of at most ``max_entries`` viewers' candidates, each kept ``max_age`` seconds."""

    def __init__(self, max_entries: int, max_age: float):
        self.max_entries, self.max_age = max_entries, max_age
        self.entries: OrderedDict[Hashable, tuple[float, ViewerCandidates]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> ViewerCandidates | None:
        entry = self.entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.max_age:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, candidates: ViewerCandidates) -> None:
        self.entries[key] = (time.monotonic(), candidates)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def counts(self) -> tuple[int, int, int]:
        """(hits, misses, entries) so far."""
        return self.hits, self.misses, len(self.entries)

    def clear(self) -> None:
        self.entries.clear()
