"""The reference province's SQLite store: accepted ratings, deduplicated, and the counters.

One connection, used from the server's event-loop thread only, so the idempotency check and the
insert cannot interleave; the UNIQUE constraints are the backstop. WAL with synchronous=FULL: a
record the server answered (or would have answered) as accepted is on disk first, so no fault
injected afterwards can lose it.

Outcome of `accept`:

- ``accepted`` — new idempotency key, stored;
- ``duplicate`` — the key is stored already with the same content (counted, answered success);
- ``idempotency_conflict`` — the key is stored with different content (rejected);
- ``duplicate_assessment`` — another key already holds this projectNo + assessNumber (一次一评).
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .profiles import Rating

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    idem_key      TEXT PRIMARY KEY,
    profile       TEXT NOT NULL,
    project_no    TEXT NOT NULL,
    assess_number INTEGER NOT NULL,
    gb_level      INTEGER NOT NULL CHECK (gb_level BETWEEN 1 AND 5),
    received_at   REAL NOT NULL,
    fields        TEXT NOT NULL,
    UNIQUE (project_no, assess_number)
);
CREATE TABLE IF NOT EXISTS services (
    project_no     TEXT NOT NULL,
    service_number INTEGER NOT NULL,
    received_at    REAL NOT NULL,
    fields         TEXT NOT NULL,
    PRIMARY KEY (project_no, service_number)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
);
"""


def canonical(fields: dict[str, Any]) -> str:
    """Field dict as canonical JSON, so equal content compares equal whatever the key order."""
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class Store:
    """Accepted ratings and event counters in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection (the data stays in the file)."""
        self._db.close()

    def accept(self, key: str, profile: str, rating: Rating) -> str:
        """Store `rating` under `key` unless seen; return the outcome (see module docstring)."""
        content = canonical(rating.fields)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT fields FROM records WHERE idem_key = ?", (key,)).fetchone()
            if row is not None:
                outcome = "duplicate" if row[0] == content else "idempotency_conflict"
            elif db.execute("SELECT 1 FROM records WHERE project_no = ? AND assess_number = ?",
                            (rating.project_no, rating.assess_number)).fetchone():
                outcome = "duplicate_assessment"
            else:
                db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (key, profile, rating.project_no, rating.assess_number,
                            rating.gb_level, time.time(), content))
                outcome = "accepted"
            if outcome == "duplicate":
                self._bump(db, "duplicates")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return outcome

    def has_service(self, project_no: str, service_number: int) -> bool:
        """True once the service record of this case and number was accepted."""
        return self._db.execute("SELECT 1 FROM services WHERE project_no = ? AND"
                                " service_number = ?", (project_no, service_number)
                                ).fetchone() is not None

    def add_batch(self, profile: str, services: list[tuple[str, int, dict]],
                  ratings: list[tuple[str, str, int, int, int, dict]]) -> list[str]:
        """Store a batch in ONE transaction: service records (project, number, fields) and
        ratings (key, project, assessNumber, serviceNumber, A.8 level, fields). Outcome per
        item, services first: accepted | duplicate (service or rating already held) |
        no_service (the rating's service record is unknown)."""
        db = self._db
        out: list[str] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            for project_no, number, fields in services:
                cur = db.execute("INSERT OR IGNORE INTO services VALUES (?, ?, ?, ?)",
                                 (project_no, number, now, canonical(fields)))
                out.append("accepted" if cur.rowcount else "duplicate")
                if not cur.rowcount:
                    self._bump(db, "service_duplicates")
            for key, project_no, assess, service, level, fields in ratings:
                if not db.execute("SELECT 1 FROM services WHERE project_no = ? AND"
                                  " service_number = ?", (project_no, service)).fetchone():
                    out.append("no_service")
                    continue
                cur = db.execute("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (key, profile, project_no, assess, level, now,
                                  canonical(fields)))
                out.append("accepted" if cur.rowcount else "duplicate")
                if not cur.rowcount:
                    self._bump(db, "duplicates")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return out

    def count(self, name: str) -> None:
        """Add one to counter `name` (e.g. ``rejected:bad_level``, ``fault:outage``)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._bump(self._db, name)
        self._db.execute("COMMIT")

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str) -> None:
        db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1",
                   (name,))

    def stats(self) -> dict[str, Any]:
        """`{"accepted", "duplicates", "rejected": {reason: n}, "by_level": {"1".."5": n},
        "faults": {kind: n}}`; by_level in GB/T 39046 A.8 codes whatever the profile."""
        db = self._db
        accepted = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        by_level = {str(level): 0 for level in range(1, 6)}
        for level, n in db.execute("SELECT gb_level, COUNT(*) FROM records GROUP BY gb_level"):
            by_level[str(level)] = n
        rejected: dict[str, int] = {}
        faults: dict[str, int] = {}
        duplicates = 0
        for name, n in db.execute("SELECT name, n FROM counters ORDER BY name"):
            if name == "duplicates":
                duplicates = n
            elif name == "service_duplicates":
                continue
            elif name.startswith("rejected:"):
                rejected[name[len("rejected:"):]] = n
            elif name.startswith("fault:"):
                faults[name[len("fault:"):]] = n
        services = db.execute("SELECT COUNT(*) FROM services").fetchone()[0]
        service_dups = db.execute("SELECT n FROM counters WHERE name = 'service_duplicates'"
                                  ).fetchone()
        return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected,
                "by_level": by_level, "faults": faults, "services": services,
                "service_duplicates": service_dups[0] if service_dups else 0}

    def records(self) -> dict[str, dict[str, Any]]:
        """Every accepted record keyed by idempotency key, fields unmasked (callers mask)."""
        result = {}
        for key, profile, project_no, number, level, at, fields in self._db.execute(
                "SELECT idem_key, profile, project_no, assess_number, gb_level, received_at, "
                "fields FROM records ORDER BY received_at, idem_key"):
            result[key] = {"profile": profile, "projectNo": project_no, "assessNumber": number,
                           "level": level, "receivedAt": at, "fields": json.loads(fields)}
        return result
