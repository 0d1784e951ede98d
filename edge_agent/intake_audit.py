"""The intake audit: one row per report an authenticated client made — accepted, duplicate or
refused after authentication — with the client's id, the endpoint, the HTTP status, the outcome,
the case number or event id it concerned (never rater data), the request's signature and the
sender's address. The signature lets a restarted agent refuse a replay of a request it accepted
before the restart (edge_agent/intake_auth.py)."""
from __future__ import annotations

import time
from typing import Any

import sqlite_utils


def record(db: sqlite_utils.Database, client_id: str, endpoint: str, status: int, outcome: str,
           ref: str | None, signature: str, remote: str | None, at: float | None = None) -> None:
    """Write one audit row (inside the caller's transaction)."""
    db.execute("INSERT INTO intake_audit(at, client_id, endpoint, status, outcome, ref, signature,"
               " remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (time.time() if at is None else at, client_id, endpoint, status, outcome,
                (ref or None) and str(ref)[:64], signature, remote))


def recent_signatures(db: sqlite_utils.Database, since: float) -> list[tuple[str, str, float]]:
    """(client, signature, at) of reports since `since` (to seed the replay memory)."""
    return [tuple(r) for r in db.execute(
        "SELECT client_id, signature, at FROM intake_audit WHERE at >= ?", (since,)).fetchall()]


def client_activity(db: sqlite_utils.Database, since: float) -> dict[str, dict[str, Any]]:
    """Per client: reports since `since` by outcome, and the time of the last one."""
    out: dict[str, dict[str, Any]] = {}
    for cid, outcome, n, last in db.execute(
            "SELECT client_id, outcome, COUNT(*), MAX(at) FROM intake_audit WHERE at >= ?"
            " GROUP BY client_id, outcome", (since,)).fetchall():
        c = out.setdefault(cid, {"outcomes": {}, "last": None})
        c["outcomes"][outcome] = n
        c["last"] = max(c["last"] or 0, last)
    return out
