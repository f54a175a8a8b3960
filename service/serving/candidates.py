"""Each viewer's retrieved candidates (`sona_jax.serve.retrieval`), kept on this process between
their requests so a request only pays for ranking.

An entry is keyed by what the candidates were made from: the viewer, their profile's version
(model version, stored events, adapter revision: any event, dismissal or training changes it)
and whether watched items were excluded. Items deleted since are masked at request time and
items added since get their own slots. Trending and popularity move with every table refresh:
a viewer still blended with cold start (popularity in their genres is much of their list) keys
on the tables too, so the next refresh retires their entry; a warm viewer's candidates only
gain trending items from them, so theirs is retired after ``max_age`` seconds at most: each
entry's age limit is drawn between ``(1 - AGE_JITTER) * max_age`` and ``max_age``, so viewers
first served together are not all retrieved again in the same second (at 10,240 item rows the
1,000 viewers of the growth benchmark, expiring together 60 s after their first lists, were
refused with 503 for two seconds). Only the event loop touches it.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Hashable

from sona_jax.config import SonaConfig
from sona_jax.serve.batch import ViewerCandidates, ViewerProfile
from sona_jax.serve.engine import ServingEngine

AGE_JITTER = 0.5  # an entry lives between half and all of max_age


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
    """An LRU of at most ``max_entries`` viewers' candidates, each kept at most ``max_age``
    seconds (at least ``(1 - AGE_JITTER) * max_age``)."""

    def __init__(self, max_entries: int, max_age: float, seed: int | None = None):
        self.max_entries, self.max_age = max_entries, max_age
        # key -> (monotonic second it expires, candidates)
        self.entries: OrderedDict[Hashable, tuple[float, ViewerCandidates]] = OrderedDict()
        self.hits = self.misses = 0
        self.random = random.Random(seed)

    def get(self, key: Hashable) -> ViewerCandidates | None:
        entry = self.entries.get(key)
        if entry is None or time.monotonic() > entry[0]:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, candidates: ViewerCandidates) -> None:
        life = self.max_age * (1.0 - AGE_JITTER * self.random.random())
        self.entries[key] = (time.monotonic() + life, candidates)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def counts(self) -> tuple[int, int, int]:
        """(hits, misses, entries) so far."""
        return self.hits, self.misses, len(self.entries)

    def clear(self) -> None:
        self.entries.clear()
