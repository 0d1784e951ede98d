"""Storage: single writer with group commit, UNIQUE(device, rseq), duplicates, cum_ack, schema."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from edge_agent.schema import LATEST, MIGRATIONS, SchemaError, migrate
from edge_agent.store import Writer, connect
from tests.agent_support import rec, running_agent, write_config


def test_group_commit_batches_concurrent_ingests(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            agent = h.agent
            before = agent.writer.commits
            # 200 links' worth of concurrent ingests: far fewer commits than calls
            results = await asyncio.gather(*(
                agent.ingest(1001, [rec(i)], 1.0) for i in range(1, 201)))
            commits = agent.writer.commits - before
            assert all(r.new == [i] and r.duplicates == [] for i, r in enumerate(results, 1))
            assert commits < 100, commits
            # every call returned after its commit: a fresh connection sees all rows
            other = sqlite3.connect(str(tmp_path / "agent.db"))
            assert other.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 200
            other.close()
    asyncio.run(scenario())


def test_duplicates_are_stored_once_and_reported(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            a = h.agent
            r1 = await a.ingest(1001, [rec(1), rec(2), rec(2)], 10.0)
            assert r1.new == [1, 2] and r1.duplicates == [2]
            r2, r3 = await asyncio.gather(a.ingest(1001, [rec(2), rec(3)], 11.0),
                                          a.ingest(1001, [rec(3), rec(1)], 11.0))
            assert sorted(r2.new + r3.new) == [3]
            assert sorted(r2.duplicates + r3.duplicates) == [1, 2, 3]
            assert r2.all == [2, 3]
            # same rseq on another device is another rating
            r4 = await a.ingest(1002, [rec(1)], 12.0)
            assert r4.new == [1]
            assert h.q("SELECT COUNT(*) FROM ratings") == [(4,)]
            assert h.q("SELECT global_id FROM ratings WHERE device_id = 1002") == [("T01-1002-1",)]
    asyncio.run(scenario())


def test_ingest_survives_restart_and_stays_unique(tmp_path):
    cfg = write_config(tmp_path)

    async def first():
        async with running_agent(cfg) as h:
            await h.agent.ingest(1001, [rec(1), rec(2)], 1.0)

    async def second():
        async with running_agent(cfg) as h:
            r = await h.agent.ingest(1001, [rec(2), rec(3)], 2.0)
            assert r.new == [3] and r.duplicates == [2]
            assert await h.agent.stored_rseqs_after(1001, 1) == [2, 3]
    asyncio.run(first())
    asyncio.run(second())


def test_cum_ack_persists_and_only_advances(tmp_path):
    cfg = write_config(tmp_path)

    async def first():
        async with running_agent(cfg) as h:
            a = h.agent
            assert await a.device_cum_ack(1001) == 0
            assert await a.set_device_cum_ack(1001, 7) == 7
            assert await a.set_device_cum_ack(1001, 5) == 7
            assert await a.set_device_cum_ack(4242, 3) == 3  # unknown device: still persisted

    async def second():
        async with running_agent(cfg) as h:
            assert await h.agent.device_cum_ack(1001) == 7
            assert await h.agent.device_cum_ack(4242) == 3
    asyncio.run(first())
    asyncio.run(second())


def test_failing_op_does_not_fail_its_batch_neighbours(tmp_path):
    async def scenario():
        w = Writer(str(tmp_path / "w.db"), linger_s=0.05)
        await w.start()

        def good(n):
            return lambda db: db.execute("INSERT INTO devices(device_id) VALUES (?)", (n,)).rowcount

        def bad(db):
            db.execute("INSERT INTO devices(device_id) VALUES (99)")
            raise ValueError("boom")
        results = await asyncio.gather(w.write(good(1)), w.write(bad), w.write(good(2)),
                                       return_exceptions=True)
        assert results[0] == 1 and results[2] == 1 and isinstance(results[1], ValueError)
        assert w.commits == 1
        await w.stop()
        db = connect(str(tmp_path / "w.db"))
        # the failed op's write was rolled back to its savepoint, its neighbours committed
        assert [r[0] for r in db.execute("SELECT device_id FROM devices ORDER BY 1")] == [1, 2]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
    asyncio.run(scenario())


def test_writer_uses_full_sync_and_schema_version(tmp_path):
    async def scenario():
        w = Writer(str(tmp_path / "w.db"))
        await w.start()
        sync = await w.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
        assert sync == 2  # FULL
        await w.stop()
    asyncio.run(scenario())
    db = connect(str(tmp_path / "w.db"))
    assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == LATEST
    assert migrate(db) == LATEST  # idempotent
    db.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST + 1,))
    db.conn.commit()
    with pytest.raises(SchemaError):
        migrate(db)
    db.close()
    assert MIGRATIONS == sorted(MIGRATIONS, key=lambda m: m[0])


def test_migration_2_keeps_version_1_alerts_and_allows_device_alerts(tmp_path):
    path = str(tmp_path / "v1.db")
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL"
                " NOT NULL)")
    for sql in MIGRATIONS[0][1]:
        raw.execute(sql)
    raw.execute("INSERT INTO schema_version VALUES (1, 0)")
    raw.execute("INSERT INTO ratings(id, device_id, rseq, global_id, device_time, assess_time,"
                " time_source, received_at, invite_id, cat_version, level, flags, reasons,"
                " binding) VALUES (9, 1001, 1, 'T-1001-1', 1, 1, 'device', 1, 0, 1, 5, 0, '[]',"
                " 'unbound')")
    raw.execute("INSERT INTO alerts(id, rating_id, kind, target, payload, state, next_at,"
                " created_at) VALUES (5, 9, 'bad_rating', 'webhook', '{}', 'pending', 1, 1)")
    raw.commit()
    raw.close()
    db = connect(path)
    assert migrate(db) == LATEST
    assert db.execute("SELECT id, rating_id, device_id, kind, state FROM alerts").fetchall() \
        == [(5, 9, None, "bad_rating", "pending")]
    db.execute("INSERT INTO alerts(device_id, kind, target, payload, state, next_at, created_at)"
               " VALUES (1001, 'hello_burst', 'webhook', '{}', 'pending', 1, 1)")
    assert db.execute("SELECT COUNT(*) FROM alerts WHERE rating_id IS NULL").fetchone() == (1,)
    db.close()


def test_count_rejected_and_device_seen(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            a = h.agent
            a.count_rejected("bad_crc")
            a.count_rejected("bad_crc")
            a.count_rejected("bad mac!")
            await a.device_seen(1001, {"online": True, "firmware": "0.1.0-test", "boot": 3,
                                       "clock": True, "backlog": 0, "journal_full": False,
                                       "junk": {"nested": "dropped"}})
            from tests.agent_support import http_json
            status, text = await http_json("GET", h.url + "/metrics")
            assert 'hcp_frames_rejected_total{reason="bad_crc"} 2' in text
            assert 'hcp_frames_rejected_total{reason="bad_mac_"} 1' in text
            assert "hcp_devices_online 1" in text
            status, devs = await http_json("GET", h.url + "/v1/devices")
            d = [d for d in devs if d["deviceId"] == 1001][0]
            assert d["online"] and d["info"]["firmware"] == "0.1.0-test"
            assert "junk" not in d["info"] and d["info"]["journal_full"] is False
            await a.device_seen(1001, {"online": False})
            status, text = await http_json("GET", h.url + "/metrics")
            assert "hcp_devices_online 0" in text
    asyncio.run(scenario())
