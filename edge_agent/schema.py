"""Versioned SQLite schema: an ordered list of migrations and the code that applies them.

Never edit a shipped migration; append a new one. `schema_version` holds one row per applied
version, so an agent that finds a newer version than it knows refuses to start rather than
guess.
"""
from __future__ import annotations

import time

import sqlite_utils

# (version, statements). Each migration runs in one transaction.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE devices (
            device_id INTEGER PRIMARY KEY,
            window TEXT,
            cum_ack INTEGER NOT NULL DEFAULT 0,
            online INTEGER NOT NULL DEFAULT 0,
            last_seen REAL,
            info TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE cases (
            id INTEGER PRIMARY KEY,
            project_no TEXT NOT NULL UNIQUE,
            window TEXT NOT NULL,
            task_code TEXT NOT NULL,
            task_name TEXT NOT NULL,
            dept_code TEXT NOT NULL,
            dept_name TEXT NOT NULL,
            area_code TEXT NOT NULL,
            staff_id TEXT NOT NULL,
            staff_name TEXT NOT NULL,
            applicant_sealed BLOB NOT NULL,
            applicant_masked TEXT NOT NULL,
            accepted_at REAL NOT NULL,
            finished_at REAL,
            promise_type INTEGER NOT NULL,
            status INTEGER NOT NULL,
            received_at REAL NOT NULL,
            rated_rating_id INTEGER
        )""",
        "CREATE INDEX cases_window ON cases(window, finished_at)",
        """CREATE TABLE invitations (
            invite_id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            device_id INTEGER,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL,
            sent_at REAL,
            send_error TEXT
        )""",
        "CREATE INDEX invitations_device ON invitations(device_id, state)",
        """CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            device_id INTEGER NOT NULL,
            rseq INTEGER NOT NULL,
            global_id TEXT NOT NULL UNIQUE,
            device_time INTEGER NOT NULL,
            assess_time REAL NOT NULL,
            time_source TEXT NOT NULL,
            received_at REAL NOT NULL,
            invite_id INTEGER NOT NULL,
            cat_version INTEGER NOT NULL,
            level INTEGER NOT NULL,
            flags INTEGER NOT NULL,
            reasons TEXT NOT NULL,
            window TEXT,
            case_id INTEGER REFERENCES cases(id),
            binding TEXT NOT NULL,
            unbound_reason TEXT,
            assess_number INTEGER,
            bound_at REAL,
            UNIQUE(device_id, rseq)
        )""",
        "CREATE INDEX ratings_unbound ON ratings(binding, window, received_at)",
        "CREATE INDEX ratings_case ON ratings(case_id)",
        "CREATE INDEX ratings_level ON ratings(level)",
        "CREATE INDEX ratings_received ON ratings(received_at)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            rating_id INTEGER NOT NULL UNIQUE REFERENCES ratings(id),
            global_id TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            created_at REAL NOT NULL,
            last_attempt_at REAL,
            done_at REAL,
            last_error TEXT,
            upstream_reply TEXT
        )""",
        "CREATE INDEX outbox_due ON outbox(state, next_at)",
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            rating_id INTEGER NOT NULL REFERENCES ratings(id),
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            created_at REAL NOT NULL,
            done_at REAL,
            last_error TEXT,
            UNIQUE(rating_id, kind, target)
        )""",
        "CREATE INDEX alerts_due ON alerts(state, next_at)",
    ]),
    # 2: device alerts (a burst of HELLOs) have no rating: rating_id becomes nullable and
    # device_id names the device. SQLite cannot drop NOT NULL in place, so the table is rebuilt.
    (2, [
        """CREATE TABLE alerts_v2 (
            id INTEGER PRIMARY KEY,
            rating_id INTEGER REFERENCES ratings(id),
            device_id INTEGER,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            created_at REAL NOT NULL,
            done_at REAL,
            last_error TEXT,
            UNIQUE(rating_id, kind, target)
        )""",
        "INSERT INTO alerts_v2(id, rating_id, device_id, kind, target, payload, state, attempts,"
        " next_at, created_at, done_at, last_error) SELECT id, rating_id, NULL, kind, target,"
        " payload, state, attempts, next_at, created_at, done_at, last_error FROM alerts",
        "DROP TABLE alerts",
        "ALTER TABLE alerts_v2 RENAME TO alerts",
        "CREATE INDEX alerts_due ON alerts(state, next_at)",
    ]),
    # 3: HELLO freshness and refusals (protocol/SPEC.md §4.2, §5.3). hello_ctr is the highest
    # HELLO counter accepted from the device under the key whose fingerprint is hello_key; a
    # HELLO must exceed it. A new key resets it (links/hello_guard.py). The counts make HELLO
    # bursts and replays visible without alert targets (`hcp agent devices`, /metrics).
    (3, [
        "ALTER TABLE devices ADD COLUMN hello_ctr INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE devices ADD COLUMN hello_key TEXT",
        "ALTER TABLE devices ADD COLUMN hellos INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE devices ADD COLUMN hello_replays INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE devices ADD COLUMN hello_limited INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE devices ADD COLUMN hello_bursts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE devices ADD COLUMN hello_refused_at REAL",
    ]),
]

LATEST = MIGRATIONS[-1][0]


class SchemaError(Exception):
    """The database was written by a newer agent, or a migration failed."""


def current_version(db: sqlite_utils.Database) -> int:
    """Highest applied schema version, 0 for a new database."""
    if not db["schema_version"].exists():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite_utils.Database) -> int:
    """Apply every pending migration in order; returns the resulting version."""
    if not db["schema_version"].exists():
        with db.atomic():
            db.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                       "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    have = current_version(db)
    if have > LATEST:
        raise SchemaError(f"数据库版本 {have} 高于本程序支持的 {LATEST} database schema {have} is "
                          f"newer than this agent ({LATEST}); upgrade the agent")
    for version, statements in MIGRATIONS:
        if version <= have:
            continue
        with db.atomic():
            for sql in statements:
                db.execute(sql)
            db.execute("INSERT INTO schema_version(version, applied_at) VALUES (?, ?)",
                       (version, time.time()))
    return current_version(db)
