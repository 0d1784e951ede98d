"""差评 follow-up (回访 → 整改 → 反馈) and appeals (申诉 / 复核). Writes only to the console's own
tables: the rating itself is never changed, hidden or deleted, and never bound here.

Every function runs inside the agent writer's transaction and raises `ActionError` with the
message to show when the step is not allowed.
"""
from __future__ import annotations

import time

import sqlite_utils

from . import audit

# the workflow: a step forward, or a note/assignee change in the same state. 已回访 may go
# straight to 已反馈 when verification found nothing to rectify.
TRANSITIONS = {"pending": {"pending", "called"}, "called": {"called", "rectifying", "feedback"},
               "rectifying": {"rectifying", "feedback"}, "feedback": {"feedback"}}
NOTE_MAX = 2000


class ActionError(Exception):
    """A console action that is not allowed now; the message says why (Chinese)."""


def _rating_id(db: sqlite_utils.Database, global_id: str) -> int:
    row = db.execute("SELECT id FROM ratings WHERE global_id = ? AND level IN (4, 5)"
                     " AND binding != 'unbound'", (global_id,)).fetchone()
    if row is None:
        raise ActionError("无此差评")
    return int(row[0])


def advance(db: sqlite_utils.Database, global_id: str, to_state: str, note: str,
            assignee: str | None, username: str, ip: str | None = None) -> str:
    """Move a 差评's follow-up to `to_state` (or add a note); returns the previous state."""
    note = (note or "").strip()
    if not note:
        raise ActionError("请填写情况说明（回访核实情况、整改措施或反馈内容）")
    if len(note) > NOTE_MAX:
        raise ActionError(f"说明过长（最多 {NOTE_MAX} 字）")
    assignee = (assignee or "").strip()[:40] or None
    rid = _rating_id(db, global_id)
    row = db.execute("SELECT state, assignee FROM followups WHERE rating_id = ?",
                     (rid,)).fetchone()
    current = row[0] if row else "pending"
    if to_state not in TRANSITIONS:
        raise ActionError("未知的处理状态")
    if to_state not in TRANSITIONS[current]:
        raise ActionError("不能从当前状态转到所选状态（流程：待回访 → 已回访 → 整改中 → 已反馈）")
    assignee = assignee or (row[1] if row else None)
    now = time.time()
    db.execute(
        "INSERT INTO followups(rating_id, state, assignee, called_at, feedback_at, updated_at,"
        " updated_by) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rating_id) DO UPDATE SET"
        " state = excluded.state, assignee = excluded.assignee,"
        " called_at = COALESCE(followups.called_at, excluded.called_at),"
        " feedback_at = COALESCE(followups.feedback_at, excluded.feedback_at),"
        " updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        (rid, to_state, assignee, now if to_state != "pending" else None,
         now if to_state == "feedback" else None, now, username))
    db.execute("INSERT INTO followup_events(rating_id, at, username, from_state, to_state,"
               " assignee, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (rid, now, username, current, to_state, assignee, note))
    audit.record(db, username, "followup", global_id, f"{current} -> {to_state}", ip, now)
    return current


def file_appeal(db: sqlite_utils.Database, global_id: str, reason: str, username: str,
                ip: str | None = None) -> int:
    """Window staff appeal a 差评 of their own (the caller checked it is theirs)."""
    reason = (reason or "").strip()
    if len(reason) < 5:
        raise ActionError("请写明申诉理由（至少 5 个字），例如误评或恶意差评的依据")
    if len(reason) > NOTE_MAX:
        raise ActionError(f"申诉理由过长（最多 {NOTE_MAX} 字）")
    rid = _rating_id(db, global_id)
    if db.execute("SELECT 1 FROM appeals WHERE rating_id = ? AND state = 'filed'",
                  (rid,)).fetchone():
        raise ActionError("该差评已有待复核的申诉")
    now = time.time()
    cur = db.execute("INSERT INTO appeals(rating_id, filed_by, filed_at, reason, state)"
                     " VALUES (?, ?, ?, ?, 'filed')", (rid, username, now, reason))
    audit.record(db, username, "appeal_filed", global_id, None, ip, now)
    return int(cur.lastrowid)


def decide_appeal(db: sqlite_utils.Database, global_id: str, appeal_id: int, upheld: bool,
                  note: str, username: str, ip: str | None = None) -> None:
    """Record the outcome of the province's 复核 (the province decides; we record it)."""
    note = (note or "").strip()
    if not note:
        raise ActionError("请填写复核结果说明（如省平台复核意见）")
    rid = _rating_id(db, global_id)
    cur = db.execute("UPDATE appeals SET state = ?, outcome_note = ?, decided_by = ?,"
                     " decided_at = ? WHERE id = ? AND rating_id = ? AND state = 'filed'",
                     ("upheld" if upheld else "rejected", note[:NOTE_MAX], username,
                      time.time(), appeal_id, rid))
    if cur.rowcount != 1:
        raise ActionError("该申诉不存在或已有复核结果")
    audit.record(db, username, "appeal_decided", global_id,
                 f"appeal {appeal_id}: {'upheld' if upheld else 'rejected'}", ip)
