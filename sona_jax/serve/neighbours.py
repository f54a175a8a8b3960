"""Approximate nearest viewers for the collaborative source, on the host (faiss HNSW).

Exact kNN scores a viewer against every pool viewer: (users, d) @ (d, P), about 80 ms a query
at a million viewers on this machine, the largest part of retrieving a first-seen viewer's
candidates. Past `CollaborativeConfig.approximate_from` pool viewers the engine searches an
HNSW graph over the pool's preference vectors instead (inner product, as the exact source) and
passes the found rows to `retrieval.retrieve`, which scores those neighbours exactly.
`bench/scale.py` measures recall against exact search (0.98-0.999 at efSearch 64-256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sona_jax.config import CollaborativeConfig

ADD_CHUNK = 65_536  # viewers added to the index at a time (a float32 copy of this many only)


@dataclass
class ViewerIndex:
    """An HNSW index over ``n`` pool rows' preference vectors, kept as float16 (faiss
    ``IndexHNSWSQ``, ``QT_fp16``): half the bytes of float32 vectors (1 GB at a million 512-d
    viewers, which are stored as float16 anyway), the same neighbours in `bench/scale.py`."""

    index: object
    n: int

    @classmethod
    def build(cls, preferences: np.ndarray, cfg: CollaborativeConfig) -> ViewerIndex:
        """Index ``preferences`` (n, d): the pool's real viewers, not its padding rows."""
        import faiss  # only servers with a large pool need it loaded

        n, d = preferences.shape
        index = faiss.IndexHNSWSQ(
            d, faiss.ScalarQuantizer.QT_fp16, cfg.hnsw_links, faiss.METRIC_INNER_PRODUCT
        )
        index.hnsw.efConstruction = cfg.hnsw_build_depth
        index.hnsw.efSearch = cfg.hnsw_search_depth
        for start in range(0, n, ADD_CHUNK):
            index.add(np.ascontiguousarray(preferences[start : start + ADD_CHUNK], np.float32))
        return cls(index, n)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(users, k) int32 pool rows nearest each of ``queries`` (users, d), -1 where fewer."""
        k = min(k, self.n)
        _, rows = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return rows.astype(np.int32)


def viewer_index(preferences: np.ndarray, cfg: CollaborativeConfig) -> ViewerIndex | None:
    """An index over ``preferences`` (n, d) when the pool is large enough to need one."""
    if cfg.approximate_from <= 0 or len(preferences) < cfg.approximate_from:
        return None
    return ViewerIndex.build(preferences, cfg)
