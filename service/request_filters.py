"""A request's ``filters`` (`schemas.Filters`) in the engine's terms (`batch.RequestFilter`):
content ids to item rows, genre names to the model's genre indices; a 400 naming the field for
what the engine cannot honour."""

from __future__ import annotations

from service import schemas
from service.errors import ApiError
from sona_jax.config import SonaConfig
from sona_jax.serve.batch import RequestFilter
from sona_jax.serve.engine import ServingEngine


def _refused(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", f"filters.{field}: {message}", {"field": field})


def _genres(names: list[str], field: str, engine: ServingEngine) -> tuple[int, ...]:
    index = {name.lower(): i for i, name in enumerate(engine.model.genre_names)}
    unknown = [name for name in names if name.lower() not in index]
    if unknown:
        known = ", ".join(engine.model.genre_names)
        raise _refused(field, f"unknown genre {unknown[0]!r} (the model knows {known})")
    return tuple(sorted({index[name.lower()] for name in names}))


def request_filter(
    filters: schemas.Filters | None, engine: ServingEngine, cfg: SonaConfig
) -> RequestFilter | None:
    """The engine's filter for ``filters``; None when they filter nothing. Excluded ids the
    engine does not know are dropped (it could not list them anyway)."""
    if filters is None:
        return None
    most = cfg.filters.max_excluded_ids
    if len(filters.exclude_content_ids) > most:
        raise _refused("exclude_content_ids", f"at most {most} content ids")
    rows = (engine.item_index.get(str(c)) for c in filters.exclude_content_ids)
    found = RequestFilter(
        excluded=tuple(sorted({r for r in rows if r is not None})),
        genres_any=_genres(filters.genres_any, "genres_any", engine),
        genres_none=_genres(filters.genres_none, "genres_none", engine),
        year_min=filters.release_year_min,
        year_max=filters.release_year_max,
        duration_min=filters.duration_min,
        duration_max=filters.duration_max,
        one_per_series=filters.one_per_series,
    )
    return None if found == RequestFilter() else found


def cache_part(found: RequestFilter | None) -> list | None:
    """What a cached list's key holds of its filter."""
    return None if found is None else repr(found)
