"""Invitations: the evidence a window's evaluator asks for a rating of one case (or of one queue
ticket's service whose case is not reported yet). Opened by case intake (agent.py) and by the
queue system's finish (queue_events.py); written inside the caller's transaction."""
from __future__ import annotations

import secrets

import sqlite_utils

from . import binding


def open_invitation(db: sqlite_utils.Database, ctx: binding.BindContext, device_id: int | None,
                    case_id: int | None, ticket_id: int | None, lifetime_s: int, now: float
                    ) -> tuple[int, list[int], list[int], list[int]]:
    """A new invitation on `device_id` (None: the window has no evaluator; it waits) for a case,
    or for a ticket whose case is not known yet. One invitation on a device at a time: older
    open ones are superseded (a press that still carries one binds all the same). Returns
    (invite id, superseded invite ids, rating ids queued, rating ids alerted) — the last two
    from late binding of the superseded cases, which can no longer be answered by invitation."""
    if device_id is None:
        open_rows = []
    else:
        open_rows = db.execute(
            "SELECT invite_id, case_id FROM invitations WHERE device_id = ? AND state IN"
            " ('sent', 'waiting') AND expires_at > ?", (device_id, now)).fetchall()
        db.execute("UPDATE invitations SET state = 'superseded' WHERE device_id = ? AND"
                   " state IN ('sent', 'waiting')", (device_id,))
    queued, alerted = binding.bind_cases_late(
        db, ctx, [r[1] for r in open_rows if r[1] is not None], now)
    while True:
        invite_id = secrets.randbelow(2 ** 32 - 1) + 1  # u32, never 0 (= unsolicited)
        if not db.execute("SELECT 1 FROM invitations WHERE invite_id = ?",
                          (invite_id,)).fetchone():
            break
    db.execute("INSERT INTO invitations(invite_id, case_id, ticket_id, device_id, created_at,"
               " expires_at, state) VALUES (?, ?, ?, ?, ?, ?, 'waiting')",
               (invite_id, case_id, ticket_id, device_id, now, now + lifetime_s))
    return invite_id, [r[0] for r in open_rows], queued, alerted
