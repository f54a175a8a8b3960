"""A request's ``filters`` (`schemas.Filters`) in the engine's terms (`batch.RequestFilter`):
content ids to item rows, genre names to the model's genre indices. Genres the model does not
know are ignored and named in the answer (``ignored_filters``), as unknown context words are."""

from __future__ import annotations

from typing import NamedTuple

from service import schemas
from service.errors import ApiError
from sona_jax.config import SonaConfig
from sona_jax.serve.batch import RequestFilter
from sona_jax.serve.engine import ServingEngine


def _refused(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", f"filters.{field}: {message}", {"field": field})


def _genres(
    names: list[str], field: str, engine: ServingEngine, ignored: dict[str, list[str]]
) -> tuple[int, ...]:
    index = {name.lower(): i for i, name in enumerate(engine.model.genre_names)}
    unknown = [name for name in names if name.lower() not in index]
    if unknown:
        ignored[field] = unknown
    return tuple(sorted({index[name.lower()] for name in names if name.lower() in index}))


class Resolved(NamedTuple):
    """The engine's filter (None: nothing filtered) and the genres ignored, by field."""

    item_filter: RequestFilter | None
    ignored: dict[str, list[str]]


def request_filter(
    filters: schemas.Filters | None, engine: ServingEngine, cfg: SonaConfig
) -> Resolved:
    """The engine's filter for ``filters``. Excluded ids the engine does not know are dropped
    (it could not list them anyway)."""
    ignored: dict[str, list[str]] = {}
    if filters is None:
        return Resolved(None, ignored)
    most = cfg.filters.max_excluded_ids
    if len(filters.exclude_content_ids) > most:
        raise _refused("exclude_content_ids", f"at most {most} content ids")
    rows = (engine.item_index.get(str(c)) for c in filters.exclude_content_ids)
    found = RequestFilter(
        excluded=tuple(sorted({r for r in rows if r is not None})),
        genres_any=_genres(filters.genres_any, "genres_any", engine, ignored),
        genres_none=_genres(filters.genres_none, "genres_none", engine, ignored),
        year_min=filters.release_year_min,
        year_max=filters.release_year_max,
        duration_min=filters.duration_min,
        duration_max=filters.duration_max,
        one_per_series=filters.one_per_series,
    )
    return Resolved(None if found == RequestFilter() else found, ignored)


def cache_part(found: RequestFilter | None) -> list | None:
    """What a cached list's key holds of its filter."""
    return None if found is None else repr(found)
