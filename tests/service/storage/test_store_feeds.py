"""The store's change feeds (SPEC 4.2) on SQLite and the real PostgreSQL: every committed write
is read exactly once from its watermark, whatever order transactions commit in; items keep the
slot they first got; deletes are tombstones; model artefacts round-trip with their checksum and
old versions are pruned."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import pytest
import pytest_asyncio

from service.storage import ContentRow, EventRow, open_store
from tests.service.servers import drop_postgres_database, fresh_postgres_database

pytestmark = pytest.mark.asyncio(loop_scope="function")


def _event(user: str, content: str, ts: float) -> EventRow:
    return EventRow(user, content, ts, 0.9)


async def test_catalogue_feed_slots_and_tombstones(store):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await store.upsert_content([ContentRow(a, "A"), ContentRow(b, "B")])
    entries, mark = await store.content_changes(0)
    slots = {e.item.content_id: e.slot for e in entries}
    assert set(slots) == {a, b} and len(set(slots.values())) == 2
    assert (await store.content_changes(mark))[0] == []  # nothing new: nothing twice
    await store.upsert_content([ContentRow(a, "A, renamed")])
    assert await store.delete_content(b)
    assert await store.get_content(b) is None and await store.existing_content([a, b]) == {a}
    changed, mark = await store.content_changes(mark)
    by_id = {e.item.content_id: e for e in changed}
    assert by_id[a].item.title == "A, renamed" and not by_id[a].deleted
    assert by_id[b].deleted and by_id[a].slot == slots[a]  # a slot is given once
    await store.upsert_content([ContentRow(b, "B is back")])  # restored: same slot
    back, _ = await store.content_changes(mark)
    assert [(e.item.content_id, e.slot, e.deleted) for e in back] == [(b, slots[b], False)]


async def test_event_feed_reads_each_event_once(store):
    user, item = str(uuid.uuid4()), str(uuid.uuid4())
    await store.add_events([_event(user, item, float(t)) for t in range(5)])
    events, mark = await store.new_events(0)
    assert len(events) == 5 and await store.count_events_since(mark) == 0
    await store.add_events([_event(user, item, 10.0)])
    later, mark = await store.new_events(mark)
    assert [e.ts for e in later] == [10.0]
    snapshot = await store.training_snapshot()
    assert len(snapshot.events) == 6
    assert (await store.new_events(snapshot.event_watermark))[0] == []  # none counted twice


@pytest_asyncio.fixture
async def postgres_store(tmp_path):
    """PostgreSQL only: SQLite commits one writer at a time, so its rowid order is commit order."""
    url = await fresh_postgres_database()
    store = open_store(url, tmp_path)
    await store.open()
    yield store
    await store.close()
    await drop_postgres_database(url)


async def test_a_late_commit_is_not_skipped(postgres_store):
    store = postgres_store
    user, item = str(uuid.uuid4()), str(uuid.uuid4())
    _, mark = await store.new_events(0)
    slow = await store.pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    await slow.execute(  # an older transaction, still open...
        "INSERT INTO events (user_id, content_id, ts, completion_rate, received_at) "
        "VALUES ($1, $2, 1.0, 0.9, 0)",
        user,
        item,
    )
    await store.add_events([_event(user, item, 2.0)])  # ...while a younger one commits
    seen, mark = await store.new_events(mark)
    await transaction.commit()
    await store.pool.release(slow)
    rest, _ = await store.new_events(mark)
    assert sorted(e.ts for e in seen + rest) == [1.0, 2.0]  # both, once each


async def test_model_artefacts_checksum_and_pruning(store):
    for version in (1, 2, 3, 4):
        size = (9 if version == 4 else 1) * 1024 * 1024 + version  # v4 spans two parts
        artefact = bytes([version]) * size
        await store.record_model_version(version, f"/m/v{version}", json.dumps({}), artefact)
    record = await store.model_record(4)
    data = await store.model_artifact(4)
    assert record.sha256 == hashlib.sha256(data).hexdigest() and record.size == len(data)
    assert data == bytes([4]) * (9 * 1024 * 1024 + 4)
    assert await store.prune_model_versions(2, spare={1}) == [2]  # 1: an experiment's
    assert await store.model_record(1) is not None
    assert await store.prune_model_versions(2) == [1]
    assert await store.latest_model_version() == (4, "/m/v4")
    assert await store.model_artifact(1) is None and await store.next_model_version() == 5


async def test_one_trainer_lock_holder(store):
    async with store.trainer_lock() as first:
        assert first
        other = open_store(
            getattr(store, "url", None), store.path.parent if hasattr(store, "path") else "."
        )
        await other.open()
        try:
            async with other.trainer_lock() as second:
                assert not second
        finally:
            await other.close()
    async with store.trainer_lock() as again:
        assert again


async def test_concurrent_writers_each_count_their_own_new_events(store):
    item = str(uuid.uuid4())
    users = [str(uuid.uuid4()) for _ in range(20)]
    await store.add_events([_event(users[0], item, 1.0)])

    async def post(i: int) -> int:  # one new event each, plus a duplicate of the first
        return await store.add_events([_event(users[i], item, 2.0), _event(users[0], item, 1.0)])

    counts = await asyncio.gather(*(post(i) for i in range(1, 20)))
    assert list(counts) == [1] * 19
    assert await store.add_events([_event(users[0], item, 1.0)]) == 0  # a pure duplicate


async def test_new_slots_and_revisions_come_from_an_index_not_a_scan(tmp_path):
    """A new item's slot is MAX(slot) + 1 (SQLite): read from an index, so seeding a catalogue
    costs O(log n) per item, not a scan of everything stored before it."""
    store = open_store(None, tmp_path)
    await store.open()
    try:
        await store.upsert_content([ContentRow(str(uuid.uuid4()), f"t{i}") for i in range(500)])
        for column in ("slot", "revision"):
            async with store.db.execute(
                f"EXPLAIN QUERY PLAN SELECT COALESCE(MAX({column}), 0) + 1 FROM content"
            ) as cursor:
                plan = " ".join(str(row[-1]) for row in await cursor.fetchall())
            assert f"INDEX content_{column}" in plan, plan  # without it: SCAN content
        entries, _ = await store.content_changes(0)
        assert sorted(e.slot for e in entries) == list(range(1, 501))
    finally:
        await store.close()


async def test_sqlite_request_path_reads_do_not_wait_for_a_write(tmp_path):
    """A viewer's events and versions are read beside a write in progress (a catalogue write's
    commit held every profile lookup behind it) and see every write acknowledged before."""
    store = open_store(None, tmp_path / "a dir with spaces")
    await store.open()
    try:
        user, item = str(uuid.uuid4()), str(uuid.uuid4())
        await store.add_events([_event(user, item, 1.0), _event(user, item, 2.0)])
        async with store.lock:  # a write in progress, as long as it likes
            events = await asyncio.wait_for(store.user_events(user), timeout=5)
            assert [e.ts for e in events] == [1.0, 2.0]
            assert await asyncio.wait_for(store.user_version(user), timeout=5) == (2, 0)
            assert await asyncio.wait_for(store.load_user_state(user), timeout=5) is None
            writing = asyncio.ensure_future(store.add_events([_event(user, item, 3.0)]))
            await asyncio.sleep(0.05)
            assert not writing.done()  # writes still queue behind it, one at a time
        await writing
        assert [e.ts for e in await store.user_events(user)] == [1.0, 2.0, 3.0]
    finally:
        await store.close()
