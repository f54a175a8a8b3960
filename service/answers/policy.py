"""Product rules the handlers apply, kept out of them: MMR λ from a request, the list cache key,
when a viewer's adapter is due for retraining, and the explanation sentences."""

from __future__ import annotations

import hashlib
import json
import random

from service.answers.context import RequestContext
from sona_jax.config import SonaConfig

EXPLAINED_BY_HISTORY = ("graph_based", "content_based", "sequential", "transformer")


def mmr_lambda(
    diversity_threshold: float | None, cfg: SonaConfig, variant: float | None = None
) -> float:
    """SPEC 5: ``diversity_threshold`` is 1 − λ; without it, the viewer's experiment variant's
    λ (``variant``), else the configured one."""
    if diversity_threshold is not None:
        return 1.0 - diversity_threshold
    return cfg.diversity.mmr_lambda if variant is None else variant


def list_cache_key(user_id: str, profile_events: int, model_version: int, *options) -> str:
    """Recommendation lists are cached per profile version and model version, so a write to
    the viewer's history or a new model invalidates them."""
    text = json.dumps([user_id, profile_events, model_version, *options])
    return "recs:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def retrain_due(events_since_training: int, events: int, cfg: SonaConfig) -> bool:
    """Adapters retrain every ``lora.retrain_every_events`` new events, once there are enough."""
    return events_since_training >= cfg.lora.retrain_every_events and events >= cfg.lora.min_events


def based_on(kind: str, history_item: str | None) -> list[str]:
    """What a recommendation cites: the history item behind a graph, sequential, transformer
    or content score, or "similar viewers" for a collaborative one."""
    if kind in EXPLAINED_BY_HISTORY and history_item is not None:
        return [history_item]
    if kind == "collaborative":
        return ["similar viewers"]
    return []


def explanation(kind: str, history_title: str | None, context: RequestContext) -> str:
    """SPEC 3.6's human sentence for one recommendation (naming only context words the engine
    knows)."""
    if kind == "sequential" and history_title:
        return f"Often watched next after {history_title}"
    if kind == "transformer" and history_title:
        return f"Fits what you have been watching lately, like {history_title}"
    if kind in EXPLAINED_BY_HISTORY and history_title:
        return f"Because you watched {history_title}"
    if kind == "collaborative":
        return "Popular with viewers who share your taste"
    if kind == "context_aware":
        device, daypart, feeling = (context.word(n) for n in ("device_type", "time_of_day", "mood"))
        where = f" on {device}" if device else ""
        when = f" in the {daypart}" if daypart else ""
        mood = f" for a {feeling} mood" if feeling else ""
        return f"Popular{where}{when}{mood}".strip()
    if kind == "exploration":
        return "Something different to explore"
    if kind == "new_content":
        return "New here, and close to what you watch"
    return "Popular right now"


def new_request_seed() -> int:
    """A seed for one request's exploration draws (not a secret: no system entropy per call,
    which cost 7 % of the event loop's time at saturation)."""
    return random.getrandbits(31)
