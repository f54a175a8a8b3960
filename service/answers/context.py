"""Request context (SPEC 5): what the engine knows of a request's words, and which it ignored.

A gateway must not fail a page because its UI gained a mood or a device type, so any short word
is accepted; the words the engine has learned (`DEVICE_TYPES`, `TIMES_OF_DAY`, `MOODS`, matched
case-insensitively) become indices, and the rest are named back in the response as ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sona_jax.data.schema import DEVICE_TYPES, TIMES_OF_DAY
from sona_jax.model.tables import MOODS

KNOWN = {"device_type": DEVICE_TYPES, "time_of_day": TIMES_OF_DAY, "mood": MOODS}
UNUSED = ("viewing_with",)  # accepted and echoed as ignored: no source reads it yet


@dataclass(frozen=True)
class RequestContext:
    """Indices into the known words (-1 absent or unknown) and the words left out."""

    device: int = -1
    time_of_day: int = -1
    mood: int = -1
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def indices(self) -> tuple[int, int, int]:
        return self.device, self.time_of_day, self.mood

    def word(self, name: str) -> str | None:
        """The known word of ``name`` ("device_type", "time_of_day", "mood"), or None."""
        index = {"device_type": self.device, "time_of_day": self.time_of_day, "mood": self.mood}
        return KNOWN[name][index[name]] if index[name] >= 0 else None


NO_CONTEXT = RequestContext()


def resolve(context) -> RequestContext:
    """The `RequestContext` of a request's context (an object with ``device_type``,
    ``time_of_day``, ``mood`` and ``viewing_with`` attributes, or None)."""
    if context is None:
        return NO_CONTEXT
    found, ignored = {}, {}
    for name, words in KNOWN.items():
        value = getattr(context, name)
        if value is None:
            continue
        word = value.strip().lower()
        if word in words:
            found[name] = words.index(word)
        else:
            ignored[name] = value
    for name in UNUSED:
        if getattr(context, name, None) is not None:
            ignored[name] = getattr(context, name)
    return RequestContext(
        found.get("device_type", -1), found.get("time_of_day", -1), found.get("mood", -1), ignored
    )
