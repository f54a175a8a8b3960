"""SONA service: the HTTP API, micro-batcher, storage and cache around the `sona_jax` engine."""
