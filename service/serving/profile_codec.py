"""Byte encodings of what the service keeps per viewer: the cached profile, and the state at
rest (preference vector and adapter in float16)."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np

from sona_jax.model.version import STORAGE_DTYPE
from sona_jax.serve.batch import ViewerProfile

HEADER_BYTES = 4  # little-endian length of the JSON header that starts a profile


def profile_to_bytes(profile: ViewerProfile) -> bytes:
    """Compact cache encoding: a JSON header (scalars, dtypes, shapes) then raw arrays."""
    arrays, scalars = [], {}
    for item in fields(profile):
        value = getattr(profile, item.name)
        if isinstance(value, np.ndarray):
            arrays.append((item.name, value.dtype.str, list(value.shape)))
        else:
            scalars[item.name] = value
    header = json.dumps({"arrays": arrays, "scalars": scalars}).encode()
    body = b"".join(np.ascontiguousarray(getattr(profile, name)).tobytes() for name, _, _ in arrays)
    return len(header).to_bytes(HEADER_BYTES, "little") + header + body


def profile_from_bytes(data: bytes) -> ViewerProfile:
    """The inverse of `profile_to_bytes`; raises ValueError / KeyError / TypeError on a
    malformed entry."""
    size = int.from_bytes(data[:HEADER_BYTES], "little")
    header = json.loads(data[HEADER_BYTES : HEADER_BYTES + size])
    values, offset = dict(header["scalars"]), HEADER_BYTES + size
    for name, dtype, shape in header["arrays"]:
        count = int(np.prod(shape))
        values[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
        offset += count * np.dtype(dtype).itemsize
    return ViewerProfile(**values)


def encode_state(profile: ViewerProfile) -> bytes:
    """What is stored per user: preference and adapter in float16 (9,216 bytes at d=512, r=8)."""
    return np.concatenate(
        [
            profile.preference.astype(STORAGE_DTYPE).ravel(),
            profile.adapter.astype(STORAGE_DTYPE).ravel(),
        ]
    ).tobytes()


def decode_adapter(state: bytes, dim: int, rank: int) -> np.ndarray | None:
    """The stored adapter (d, r), or None when there is none of these shapes."""
    values = np.frombuffer(state, STORAGE_DTYPE)
    if values.size != dim + dim * rank:
        return None  # empty or from a model with other shapes: start from zero
    return values[dim:].reshape(dim, rank).copy()
