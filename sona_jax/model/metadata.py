"""SPEC 4.1: the map from item metadata to item embeddings, fitted with the base tier, so an item
added after a model version lands near the items it resembles.

Features (host numpy, one row per item): genres (multi-hot over the model's genres), moods (in
`tables.MOODS` order), duration and release-year bins (one-hot, nothing when unknown), the
series id and the title's words hashed into buckets (crc32: stable across processes, unlike
Python's salted ``hash``), and a constant. The map is a ridge regression from these features
onto the fitted embeddings ``E``; a new item's embedding is its mapped row, L2-normalised.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from sona_jax.config import CatalogueConfig
from sona_jax.data.schema import MOODS, Catalogue

_WORD = re.compile(r"\w+")


class ItemMetadata(NamedTuple):
    """What the map reads of n items.

    titles: (n,) str; genres: (n, G) multi-hot over the model's genres; moods: (n, 6) in MOODS
    order; duration: (n,) minutes, NaN unknown; release_year: (n,) NaN unknown; series: (n,) str
    series id or None.
    """

    titles: Sequence[str]
    genres: np.ndarray
    moods: np.ndarray
    duration: np.ndarray
    release_year: np.ndarray
    series: Sequence[str | None]


def moods_in_order(mood_names: Sequence[str], moods: np.ndarray | None, n: int) -> np.ndarray:
    """(n, 6) float32 flags in MOODS order from a catalogue's own mood columns."""
    out = np.zeros((n, len(MOODS)), np.float32)
    if moods is not None:
        for column, name in enumerate(mood_names):
            if name in MOODS:
                out[:, MOODS.index(name)] = moods[:, column]
    return out


def series_ids(catalogue: Catalogue) -> list[str | None]:
    """(items,) each item's series id: ``series_names[s]``, or ``"series-<s>"`` without names
    (the synthetic catalogue's, which the demo stores)."""
    if catalogue.series is None:
        return [None] * catalogue.n_items
    names = catalogue.series_names
    return [
        None if s < 0 else (names[s] if names else f"series-{s}") for s in catalogue.series.tolist()
    ]


UNKNOWN = -1.0  # duration / release year of an item that does not say
NO_SERIES = -1


def known_or_unknown(values) -> np.ndarray:
    """(n,) float32 ``values`` with NaN (unknown) as `UNKNOWN`, as the served tables hold them."""
    return np.nan_to_num(np.asarray(values, np.float32), nan=UNKNOWN)


def series_keys(series: Sequence[str | None]) -> np.ndarray:
    """(n,) int32 a key per series id (crc32, stable across processes and model versions, so
    items added later compare with the model's), `NO_SERIES` for none."""
    return np.array(
        [NO_SERIES if s is None else zlib.crc32(s.encode()) & 0x7FFFFFFF for s in series],
        np.int32,
    )


def catalogue_metadata(catalogue: Catalogue) -> ItemMetadata:
    """A catalogue's metadata in the map's terms."""
    return ItemMetadata(
        titles=[str(t) for t in catalogue.titles.tolist()],
        genres=np.asarray(catalogue.genres, np.float32),
        moods=moods_in_order(catalogue.mood_names, catalogue.moods, catalogue.n_items),
        duration=np.asarray(catalogue.duration_minutes, np.float64),
        release_year=np.asarray(catalogue.release_year, np.float64),
        series=series_ids(catalogue),
    )


def _bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """(n, len(edges) + 1) one-hot bins; unknown (NaN) rows all zero."""
    out = np.zeros((len(values), len(edges) + 1), np.float32)
    known = np.isfinite(values)
    out[np.flatnonzero(known), np.digitize(values[known], np.asarray(edges))] = 1.0
    return out


def _hashed(keys: Sequence[Sequence[str]], buckets: int) -> np.ndarray:
    """(n, buckets): each row's keys hashed into buckets, the row scaled to unit length."""
    out = np.zeros((len(keys), buckets), np.float32)
    for row, words in enumerate(keys):
        for word in words:
            out[row, zlib.crc32(word.encode()) % buckets] += 1.0
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm > 0, norm, 1.0)


def metadata_features(meta: ItemMetadata, cfg: CatalogueConfig) -> np.ndarray:
    """(n, f) float32 features of n items (f fixed by the model's genres and ``cfg``)."""
    n = len(meta.titles)
    words = [_WORD.findall(title.lower()) for title in meta.titles]
    series = [[s] if s else [] for s in meta.series]
    return np.concatenate(
        [
            np.asarray(meta.genres, np.float32),
            np.asarray(meta.moods, np.float32),
            _bins(np.asarray(meta.duration, np.float64), cfg.duration_edges),
            _bins(np.asarray(meta.release_year, np.float64), cfg.year_edges),
            _hashed(series, cfg.series_buckets),
            _hashed(words, cfg.title_buckets),
            np.ones((n, 1), np.float32),
        ],
        axis=1,
    )


def fit_metadata_map(features: np.ndarray, embeddings: np.ndarray, l2: float) -> np.ndarray:
    """(f, d) float32 ridge map ``(XᵀX + λI)⁻¹ XᵀE`` from features (items, f) to E (items, d)."""
    x = np.asarray(features, np.float64)
    gram = x.T @ x + l2 * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ np.asarray(embeddings, np.float64)).astype(np.float32)


def mapped_embeddings(features: np.ndarray, metadata_map: np.ndarray) -> np.ndarray:
    """(n, d) unit rows: features (n, f) through the map (zero rows stay zero)."""
    mapped = np.asarray(features, np.float32) @ metadata_map
    norm = np.linalg.norm(mapped, axis=1, keepdims=True)
    return (mapped / np.where(norm > 0, norm, 1.0)).astype(np.float32)
