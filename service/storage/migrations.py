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
    # 2: the learning loop — item slots and a change feed (revision = writing transaction),
    # soft deletes, an ingestion order for events, model artefacts in the database, rebuilds
    """
    CREATE SEQUENCE IF NOT EXISTS content_slot_seq;
    ALTER TABLE content ADD COLUMN IF NOT EXISTS slot BIGINT;
    UPDATE content SET slot = nextval('content_slot_seq') WHERE slot IS NULL;
    ALTER TABLE content ALTER COLUMN slot SET DEFAULT nextval('content_slot_seq');
    ALTER TABLE content ALTER COLUMN slot SET NOT NULL;
    ALTER TABLE content ADD COLUMN IF NOT EXISTS revision BIGINT NOT NULL
        DEFAULT pg_current_xact_id()::text::bigint;
    ALTER TABLE content ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX IF NOT EXISTS content_revision ON content (revision);
    ALTER TABLE events ADD COLUMN IF NOT EXISTS txid BIGINT NOT NULL
        DEFAULT pg_current_xact_id()::text::bigint;
    CREATE INDEX IF NOT EXISTS events_txid ON events (txid);
    ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS sha256 TEXT;
    ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS size BIGINT;
    CREATE TABLE IF NOT EXISTS model_artifacts (
        version INTEGER NOT NULL,
        part INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (version, part)
    );
    CREATE TABLE IF NOT EXISTS rebuilds (
        id BIGSERIAL PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        version INTEGER,
        message TEXT NOT NULL DEFAULT ''
    );
    """,
    # 3: profiles carry the version of the history they were built from (events counted, and
    # the adapter's revision: +1 on every trained adapter saved)
    """
    ALTER TABLE user_state ADD COLUMN IF NOT EXISTS adapter_revision BIGINT NOT NULL DEFAULT 0;
    """,
    # 4: experiments — definitions, the lists shown in them, and the list an
    # event was watched from
    """
    CREATE TABLE IF NOT EXISTS experiments (
        experiment_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        salt TEXT NOT NULL,
        status TEXT NOT NULL,
        definition JSONB NOT NULL,
        shipped_variant TEXT,
        looks JSONB NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS exposures (
        recommendation_id TEXT NOT NULL,
        experiment_id TEXT NOT NULL,
        variant INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (experiment_id, recommendation_id)
    );
    CREATE TABLE IF NOT EXISTS exposure_items (
        recommendation_id TEXT NOT NULL,
        content_id TEXT NOT NULL,
        PRIMARY KEY (recommendation_id, content_id)
    );
    ALTER TABLE events ADD COLUMN IF NOT EXISTS recommendation_id TEXT;
    """,
    # 5: an item's views over time (the console's item page) without scanning every event
    """
    CREATE INDEX IF NOT EXISTS events_content_ts ON events (content_id, ts);
    """,
    # 6: the catalogue in slot order (training snapshots) from an index, as SQLite's 6
    """
    CREATE INDEX IF NOT EXISTS content_slot ON content (slot);
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
    # 2: as PostgreSQL's 2 (revisions count writes; events keep their rowid as ingestion order)
    """
    ALTER TABLE content ADD COLUMN slot INTEGER;
    ALTER TABLE content ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE content ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    UPDATE content SET slot = rowid, revision = rowid;
    CREATE INDEX IF NOT EXISTS content_revision ON content (revision);
    ALTER TABLE model_versions ADD COLUMN sha256 TEXT;
    ALTER TABLE model_versions ADD COLUMN size INTEGER;
    CREATE TABLE IF NOT EXISTS model_artifacts (
        version INTEGER NOT NULL,
        part INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (version, part)
    );
    CREATE TABLE IF NOT EXISTS rebuilds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        outcome TEXT NOT NULL,
        version INTEGER,
        message TEXT NOT NULL DEFAULT ''
    );
    """,
    # 3: as PostgreSQL's 3
    """
    ALTER TABLE user_state ADD COLUMN adapter_revision INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: as PostgreSQL's 4
    """
    CREATE TABLE IF NOT EXISTS experiments (
        experiment_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        salt TEXT NOT NULL,
        status TEXT NOT NULL,
        definition TEXT NOT NULL,
        shipped_variant TEXT,
        looks TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS exposures (
        recommendation_id TEXT NOT NULL,
        experiment_id TEXT NOT NULL,
        variant INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (experiment_id, recommendation_id)
    );
    CREATE TABLE IF NOT EXISTS exposure_items (
        recommendation_id TEXT NOT NULL,
        content_id TEXT NOT NULL,
        PRIMARY KEY (recommendation_id, content_id)
    );
    ALTER TABLE events ADD COLUMN recommendation_id TEXT;
    """,
    # 5: as PostgreSQL's 5
    """
    CREATE INDEX IF NOT EXISTS events_content_ts ON events (content_id, ts);
    """,
    # 6: a new item's slot is MAX(slot) + 1: without an index every upserted row scanned the
    # whole catalogue (seeding 50,000 items took about 4 minutes, quadratic in the catalogue)
    """
    CREATE INDEX IF NOT EXISTS content_slot ON content (slot);
    """,
]
