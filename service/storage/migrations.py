"""Versioned schema migrations, one list per backend; applied in order, each exactly once."""

from __future__ import annotations

POSTGRES: list[str] = [
    # 1: catalogue, events, user state, model versions
    """
    CREATE TABLE IF NOT EXISTS content (
        content_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        genres JSONB NOT NULL DEFAULT '[]',
        duration_minutes DOUBLE PRECISION,
        release_year INTEGER,
        moods JSONB NOT NULL DEFAULT '[]',
        series_id TEXT,
        embedding BYTEA,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS events (
        user_id TEXT NOT NULL,
        content_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        completion_rate REAL NOT NULL,
        rating SMALLINT,
        is_rewatch BOOLEAN NOT NULL DEFAULT FALSE,
        dismissed BOOLEAN NOT NULL DEFAULT FALSE,
        device_type TEXT,
        time_of_day TEXT,
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (user_id, content_id, ts)
    );
    CREATE TABLE IF NOT EXISTS user_state (
        user_id TEXT PRIMARY KEY,
        state BYTEA NOT NULL,
        events_since_training INTEGER NOT NULL DEFAULT 0,
        last_trained DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS model_versions (
        version INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        report JSONB NOT NULL DEFAULT '{}'
    );
    """,
]

SQLITE: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS content (
        content_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        genres TEXT NOT NULL DEFAULT '[]',
        duration_minutes REAL,
        release_year INTEGER,
        moods TEXT NOT NULL DEFAULT '[]',
        series_id TEXT,
        embedding BLOB,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS events (
        user_id TEXT NOT NULL,
        content_id TEXT NOT NULL,
        ts REAL NOT NULL,
        completion_rate REAL NOT NULL,
        rating INTEGER,
        is_rewatch INTEGER NOT NULL DEFAULT 0,
        dismissed INTEGER NOT NULL DEFAULT 0,
        device_type TEXT,
        time_of_day TEXT,
        received_at REAL NOT NULL,
        PRIMARY KEY (user_id, content_id, ts)
    );
    CREATE TABLE IF NOT EXISTS user_state (
        user_id TEXT PRIMARY KEY,
        state BLOB NOT NULL,
        events_since_training INTEGER NOT NULL DEFAULT 0,
        last_trained REAL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS model_versions (
        version INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        created_at REAL NOT NULL,
        report TEXT NOT NULL DEFAULT '{}'
    );
    """,
]
