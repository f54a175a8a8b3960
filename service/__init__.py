"""SONA service: the HTTP API, micro-batcher, storage and cache around the `sona_jax` engine.

Floors, each importing only those below it (`tests/test_floors.py`): app and cli; routes;
console; answers; state; http; learning; experiments; serving; then settings, metrics, errors,
schemas, startup and storage."""

SERVICE_NAME = "sona-personalization-engine"
VERSION = "0.1.0"
