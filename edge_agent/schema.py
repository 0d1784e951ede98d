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
    # 3: the hall console (edge_agent/console/): accounts and sessions, the audit log, 差评
    # follow-ups and appeals, paper forms, and daily statistics rollups. Ratings are never
    # changed by any of these tables; they only refer to them.
    (3, [
        """CREATE TABLE console_users (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('supervisor', 'technician', 'window')),
            window TEXT,
            staff_id TEXT,
            password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE console_sessions (
            token_hash TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES console_users(id),
            csrf TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE console_audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            username TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT,
            ip TEXT
        )""",
        "CREATE INDEX console_audit_at ON console_audit(at)",
        """CREATE TABLE followups (
            rating_id INTEGER PRIMARY KEY REFERENCES ratings(id),
            state TEXT NOT NULL CHECK (state IN ('pending', 'called', 'rectifying', 'feedback')),
            assignee TEXT,
            called_at REAL,
            feedback_at REAL,
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL
        )""",
        """CREATE TABLE followup_events (
            id INTEGER PRIMARY KEY,
            rating_id INTEGER NOT NULL REFERENCES ratings(id),
            at REAL NOT NULL,
            username TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            assignee TEXT,
            note TEXT NOT NULL
        )""",
        "CREATE INDEX followup_events_rating ON followup_events(rating_id, at)",
        """CREATE TABLE appeals (
            id INTEGER PRIMARY KEY,
            rating_id INTEGER NOT NULL REFERENCES ratings(id),
            filed_by TEXT NOT NULL,
            filed_at REAL NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('filed', 'upheld', 'rejected')),
            outcome_note TEXT,
            decided_by TEXT,
            decided_at REAL
        )""",
        "CREATE INDEX appeals_rating ON appeals(rating_id)",
        """CREATE TABLE paper_forms (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 5),
            reasons TEXT NOT NULL,
            written TEXT NOT NULL DEFAULT '',
            rated_on TEXT NOT NULL,
            scan_file TEXT NOT NULL,
            scan_sha256 TEXT NOT NULL,
            scan_type TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('entered', 'confirmed', 'rejected', 'queued')),
            entered_by TEXT NOT NULL,
            entered_at REAL NOT NULL,
            checked_by TEXT,
            checked_at REAL,
            reject_reason TEXT,
            rating_id INTEGER REFERENCES ratings(id)
        )""",
        "CREATE INDEX paper_forms_case ON paper_forms(case_id, state)",
        # covers the open/overdue 差评 count of the overview and the worklist's order
        "CREATE INDEX ratings_level_time ON ratings(level, assess_time, binding, window)",
        # daily rollups by hall day (statistics on a 1,000,000-rating hall in < 300 ms)
        """CREATE TABLE stat_window (day TEXT NOT NULL, window TEXT NOT NULL,
            level INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (day, window, level)) WITHOUT ROWID""",
        """CREATE TABLE stat_staff (day TEXT NOT NULL, window TEXT NOT NULL,
            staff_id TEXT NOT NULL, level INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (day, window, staff_id, level)) WITHOUT ROWID""",
        """CREATE TABLE stat_task (day TEXT NOT NULL, window TEXT NOT NULL,
            task_code TEXT NOT NULL, level INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (day, window, task_code, level)) WITHOUT ROWID""",
        """CREATE TABLE stat_reason (day TEXT NOT NULL, window TEXT NOT NULL,
            task_code TEXT NOT NULL, reason INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (day, window, task_code, reason)) WITHOUT ROWID""",
        """CREATE TABLE stat_names (kind TEXT NOT NULL, code TEXT NOT NULL, name TEXT NOT NULL,
            PRIMARY KEY (kind, code)) WITHOUT ROWID""",
        """CREATE TABLE stat_mark (id INTEGER PRIMARY KEY CHECK (id = 1),
            rolled_to INTEGER NOT NULL)""",
        "INSERT INTO stat_mark(id, rolled_to) VALUES (1, 0)",
    ]),
    # 4: upstreams that want the case's service record (服务数据) before its rating; what a
    # confirmation said (duplicate) and what the province knows the rating as; the case's
    # 事项类型; every reason-tag catalogue version the agent used, to map device tag codes to
    # the province's code strings for ratings made under that version.
    (4, [
        """CREATE TABLE upstream_services (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            service_number INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at REAL NOT NULL,
            created_at REAL NOT NULL,
            last_attempt_at REAL,
            done_at REAL,
            last_error TEXT,
            upstream_reply TEXT,
            duplicate INTEGER NOT NULL DEFAULT 0,
            UNIQUE(case_id, service_number)
        )""",
        "CREATE INDEX upstream_services_due ON upstream_services(state, next_at)",
        "ALTER TABLE outbox ADD COLUMN duplicate INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE outbox ADD COLUMN upstream_ref TEXT",
        "ALTER TABLE cases ADD COLUMN task_type TEXT",
        """CREATE TABLE catalogues (
            version INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            digest TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
    ]),
    # 5: binding integrity (issue 11). Intake clients' reports are audited; the queue system's
    # tickets and events are kept; an invitation may be for a ticket whose case is not known
    # yet (case_id becomes nullable: the table is rebuilt); a rating keeps the reference a
    # waiting-area device scanned, the ticket it reached through, and the staff member on duty
    # at its window for an unsolicited press (a misuse signal, never a binding).
    (5, [
        """CREATE TABLE intake_audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            client_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            status INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            ref TEXT,
            signature TEXT NOT NULL,
            remote TEXT
        )""",
        "CREATE INDEX intake_audit_client ON intake_audit(client_id, at)",
        "CREATE INDEX intake_audit_at ON intake_audit(at)",
        """CREATE TABLE tickets (
            id INTEGER PRIMARY KEY,
            ticket TEXT NOT NULL,
            state TEXT NOT NULL,
            issued_at REAL,
            window TEXT,
            staff_id TEXT,
            staff_name TEXT,
            called_at REAL,
            started_at REAL,
            finished_at REAL,
            no_show_at REAL,
            case_id INTEGER REFERENCES cases(id),
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX tickets_code ON tickets(ticket, created_at)",
        "CREATE INDEX tickets_window ON tickets(window, called_at)",
        "CREATE INDEX tickets_case ON tickets(case_id)",
        """CREATE TABLE queue_events (
            id INTEGER PRIMARY KEY,
            client_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            ticket_id INTEGER NOT NULL REFERENCES tickets(id),
            window TEXT,
            staff_id TEXT,
            at REAL NOT NULL,
            received_at REAL NOT NULL,
            UNIQUE(client_id, event_id)
        )""",
        """CREATE TABLE invitations_v3 (
            invite_id INTEGER PRIMARY KEY,
            case_id INTEGER REFERENCES cases(id),
            ticket_id INTEGER REFERENCES tickets(id),
            device_id INTEGER,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL,
            sent_at REAL,
            send_error TEXT
        )""",
        "INSERT INTO invitations_v3(invite_id, case_id, ticket_id, device_id, created_at,"
        " expires_at, state, sent_at, send_error) SELECT invite_id, case_id, NULL, device_id,"
        " created_at, expires_at, state, sent_at, send_error FROM invitations",
        "DROP TABLE invitations",
        "ALTER TABLE invitations_v3 RENAME TO invitations",
        "CREATE INDEX invitations_device ON invitations(device_id, state)",
        "CREATE INDEX invitations_case ON invitations(case_id)",
        "CREATE INDEX invitations_ticket ON invitations(ticket_id)",
        "ALTER TABLE ratings ADD COLUMN ref TEXT",
        "ALTER TABLE ratings ADD COLUMN ticket_id INTEGER REFERENCES tickets(id)",
        "ALTER TABLE ratings ADD COLUMN duty_staff TEXT",
        "CREATE INDEX ratings_ref ON ratings(ref) WHERE ref IS NOT NULL",
        "CREATE INDEX ratings_ticket ON ratings(ticket_id) WHERE ticket_id IS NOT NULL",
        "ALTER TABLE cases ADD COLUMN ticket TEXT",
        "ALTER TABLE cases ADD COLUMN client_id TEXT",
        "ALTER TABLE devices ADD COLUMN role TEXT NOT NULL DEFAULT 'window'",
    ]),
    # 6: HELLO freshness and refusals (protocol/SPEC.md §4.2, §5.3). hello_ctr is the highest
    # HELLO counter accepted from the device under the key whose fingerprint is hello_key; a
    # HELLO must exceed it. A new key resets it (links/hello_guard.py). The counts make HELLO
    # bursts and replays visible without alert targets (`hcp agent devices`, /metrics).
    (6, [
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
