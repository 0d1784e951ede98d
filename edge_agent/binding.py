"""Storing device records and binding them to cases. Runs inside the writer's transaction.

A rating lands on a case only through evidence: the invitation it answered, the queue ticket
whose service it answered, or the reference a waiting-area evaluator scanned — never a guess by
default. Rules (the README has the table):

* invite_id != 0 and the invitation exists (even expired or superseded: the device accepted the
  press while it showed that invitation) -> bound to the invitation's case, `binding='invitation'`
  (`'ticket'` when the queue system opened that service, edge_agent/queue_events.py). A ticket's
  service whose case is not reported yet keeps the rating unbound, `awaiting_case`, until a case
  report names the ticket (`bind_case_evidence`).
* invite_id != 0, invitation unknown -> unbound, `unknown_invitation`; an invitation that belongs to
  another device -> unbound, `invitation_device_mismatch`. Never re-guessed as unsolicited.
* a scanned reference (RECORDS_REF, waiting-area devices) -> the case whose projectNo it is, or
  the case of the queue ticket whose code it is, `binding='reference'`; refused and kept with the
  reason: `unknown_reference` (nothing has that code — bound later if a case or ticket with it is
  reported), `awaiting_case` (the ticket's case is not reported yet), `already_rated` (一次一评),
  `too_old` (the case finished more than `reference_max_age_s` before the press).
* invite_id == 0 (unsolicited) -> by default kept, unbound, `unsolicited`: a press at an empty
  window is no evidence of whose case it rates (a passer-by, or staff). A hall may opt a window
  in to inference (`binding.unsolicited = "infer"`): then the latest UNRATED case of the
  device's window finished within `binding_window_s` before the press, `binding='inferred'`; none
  -> unbound `no_case`, and such presses are re-checked for a case reported later (`bind_late`,
  `binding='late_case'`). Either way the staff member on duty at the window is noted
  (`duty_staff`) for the misuse signals (queries.press_signals), never for binding.
* Exact beats inferred: a case whose invitation is still open (waiting or showing on a device) is
  never taken by an unsolicited press, neither at once nor late. Its citizen answers the
  invitation; only when the invitation ends unanswered (expired, or superseded by the next case)
  may an unsolicited press bind to it (`close_expired`, `bind_late`). Otherwise anyone pressing
  a button just before a case is reported — a passer-by, or staff — would take the case, and the
  citizen's own rating, possibly a 差评, would be left unbound as `case_already_rated`.
* A case takes one rating per assessNumber: a press for an already rated case is kept, unbound,
  `case_already_rated`, listed and never uploaded.
* A level outside 1..5 is kept, unbound, `invalid_level`; a device not in the config,
  `unknown_device`.

Only bound ratings get an outbox job, written in the same transaction as the binding. 差评
(level 4/5) get one alert row per configured target at ingest, and another when a late case binds.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from .catalogue import ReasonBook
from .levels import LEVEL_NAMES

FLAG_CLOCK_UNSYNCED = 1
FLAG_REASON_TIMEOUT = 2
FLAG_TOO_FAST = 4
FLAG_UNSOLICITED = 8
FLAG_TIME_CORRECTED = 16

# clock skew allowed between the business system, the agent and a synced device
SKEW_S = 60


@dataclass(frozen=True)
class BindContext:
    """What binding needs from the config, without the config object (plain data for the thread)."""
    hall_code: str
    device_windows: dict[int, str]
    binding_window_s: int
    alert_targets: tuple[str, ...]
    window_names: dict[str, str]
    reasons: ReasonBook = field(default_factory=ReasonBook)   # code -> name, the catalogue
    console_url: str | None = None     # alerts link to the console's worklist item
    unsolicited: dict[str, str] = field(default_factory=dict)   # window -> "keep" | "infer"
    reference_max_age_s: int = 86400


def global_id(hall_code: str, device_id: int, rseq: int) -> str:
    """The rating's global id and upstream idempotency key."""
    return f"{hall_code}-{device_id}-{rseq}"


def _assess_time(rec: Any, received_at: float) -> tuple[float, str]:
    flags = int(rec.flags)
    if flags & FLAG_CLOCK_UNSYNCED and not flags & FLAG_TIME_CORRECTED:
        # device seconds since boot are no wall time; the agent's receipt time is the best bound
        return received_at, "agent"
    return float(rec.time), "device"


def store_records(db: sqlite_utils.Database, ctx: BindContext, device_id: int, records: list,
                  received_at: float) -> tuple[list[int], list[int], list[int], list[int]]:
    """Insert records (UNIQUE(device_id, rseq)), bind the new ones, write outbox and alert rows.

    Returns (new rseqs, duplicate rseqs, rating ids with an outbox job, rating ids with alerts).
    """
    new, dups, queued, alerted = [], [], [], []
    window = ctx.device_windows.get(device_id)
    for rec in records:
        rseq = int(rec.rseq)
        assess_time, source = _assess_time(rec, received_at)
        reasons = [int(r) for r in (rec.reasons or ())]
        cur = db.execute(
            "INSERT OR IGNORE INTO ratings(device_id, rseq, global_id, device_time, assess_time,"
            " time_source, received_at, invite_id, cat_version, level, flags, reasons, window,"
            " binding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?, 'unbound')",
            (device_id, rseq, global_id(ctx.hall_code, device_id, rseq), int(rec.time),
             assess_time, source, received_at, int(rec.invite_id), int(rec.cat_version),
             int(rec.level), int(rec.flags), json.dumps(reasons), window))
        if cur.rowcount == 0:
            dups.append(rseq)
            continue
        new.append(rseq)
        rating_id = cur.lastrowid
        if _bind_new(db, ctx, rating_id, device_id, window, rec, received_at):
            queued.append(rating_id)
        if 4 <= int(rec.level) <= 5 and ctx.alert_targets:
            _add_alerts(db, ctx, rating_id, "bad_rating", received_at)
            alerted.append(rating_id)
    return new, dups, queued, alerted


def _bind_new(db, ctx: BindContext, rating_id: int, device_id: int, window: str | None, rec: Any,
              now: float) -> bool:
    level, invite_id = int(rec.level), int(rec.invite_id)
    ref = getattr(rec, "ref", None)
    if ref is not None:
        db.execute("UPDATE ratings SET ref = ? WHERE id = ?", (ref, rating_id))
    if device_id not in ctx.device_windows:
        return _unbound(db, rating_id, "unknown_device")
    if not 1 <= level <= 5:
        return _unbound(db, rating_id, "invalid_level")
    if ref is not None:
        return _bind_reference(db, ctx, rating_id, ref, now)
    if invite_id:
        inv = db.execute("SELECT case_id, device_id, ticket_id FROM invitations"
                         " WHERE invite_id = ?", (invite_id,)).fetchone()
        if inv is None:
            return _unbound(db, rating_id, "unknown_invitation")
        if inv[1] is not None and inv[1] != device_id:
            return _unbound(db, rating_id, "invitation_device_mismatch")
        db.execute("UPDATE invitations SET state = 'answered' WHERE invite_id = ?", (invite_id,))
        if inv[2] is not None:
            db.execute("UPDATE ratings SET ticket_id = ? WHERE id = ?", (inv[2], rating_id))
        if inv[0] is None:
            # the queue system opened this ticket's service; its case is not reported yet
            return _unbound(db, rating_id, "awaiting_case")
        return _bind(db, rating_id, inv[0], "ticket" if inv[2] is not None else "invitation",
                     now)
    if window is None:
        # a waiting-area device sends nothing unscanned; if one does, it is evidence of nothing
        return _unbound(db, rating_id, "unsolicited")
    _note_duty_staff(db, rating_id, window, now)
    if ctx.unsolicited.get(window, "keep") != "infer":
        return _unbound(db, rating_id, "unsolicited")
    # inference (opted in): the latest unrated case of this window finished within the binding
    # window, unless its invitation is still open (exact beats inferred, see above)
    row = db.execute(
        "SELECT id FROM cases WHERE window = ? AND rated_rating_id IS NULL"
        " AND COALESCE(finished_at, received_at) BETWEEN ? AND ?"
        " AND NOT EXISTS (" + _OPEN_INVITATION.format(case="cases.id") + ")"
        " ORDER BY COALESCE(finished_at, received_at) DESC, id DESC LIMIT 1",
        (window, now - ctx.binding_window_s, now + SKEW_S, now)).fetchone()
    if row is None:
        return _unbound(db, rating_id, "no_case")
    return _bind(db, rating_id, row[0], "inferred", now)


# how long a queue call or a case report says who staffs a window (the misuse signals)
DUTY_S = 8 * 3600


def _note_duty_staff(db, rating_id: int, window: str, at: float) -> None:
    """Remember who was on duty at the window when an unsolicited press came: the staff of the
    window's latest case report or queue call. A signal for the console, never a binding."""
    row = db.execute(
        "SELECT staff_id FROM (SELECT staff_id, received_at AS t FROM cases WHERE window = ?"
        " AND received_at BETWEEN ? AND ? UNION ALL SELECT staff_id, called_at AS t FROM tickets"
        " WHERE window = ? AND staff_id IS NOT NULL AND called_at BETWEEN ? AND ?)"
        " ORDER BY t DESC LIMIT 1",
        (window, at - DUTY_S, at + SKEW_S, window, at - DUTY_S, at + SKEW_S)).fetchone()
    if row is not None:
        db.execute("UPDATE ratings SET duty_staff = ? WHERE id = ?", (row[0], rating_id))


def _rating_time(db, rating_id: int) -> float:
    return db.execute("SELECT assess_time FROM ratings WHERE id = ?", (rating_id,)).fetchone()[0]


def _ticket_by_code(db, code: str):
    """(id, case_id, last event time) of the latest ticket with this code, or None."""
    return db.execute("SELECT id, case_id, COALESCE(finished_at, called_at, issued_at,"
                      " created_at) FROM tickets WHERE ticket = ? ORDER BY created_at DESC,"
                      " id DESC LIMIT 1", (code,)).fetchone()


def _bind_reference(db, ctx: BindContext, rating_id: int, ref: str, now: float) -> bool:
    """A waiting-area rating: its scanned code is a projectNo or a queue ticket's code."""
    at = _rating_time(db, rating_id)
    case = db.execute("SELECT id, COALESCE(finished_at, received_at), rated_rating_id"
                      " FROM cases WHERE project_no = ?", (ref,)).fetchone()
    if case is None:
        t = _ticket_by_code(db, ref)
        if t is None:
            return _unbound(db, rating_id, "unknown_reference")
        db.execute("UPDATE ratings SET ticket_id = ? WHERE id = ?", (t[0], rating_id))
        if at - t[2] > ctx.reference_max_age_s:
            return _unbound(db, rating_id, "too_old")
        # rated here: the ticket's service is not to be rated again at its window
        db.execute("UPDATE invitations SET state = 'cancelling' WHERE ticket_id = ?"
                   " AND state IN ('waiting', 'sent')", (t[0],))
        if t[1] is None:
            return _unbound(db, rating_id, "awaiting_case")
        case = db.execute("SELECT id, COALESCE(finished_at, received_at), rated_rating_id"
                          " FROM cases WHERE id = ?", (t[1],)).fetchone()
    return _bind_evidence(db, ctx, rating_id, case, at, "reference", now)


def _bind_evidence(db, ctx: BindContext, rating_id: int, case: tuple, at: float, how: str,
                   now: float, check_age: bool = True) -> bool:
    """Bind to `case` (id, finished/received time, rated rating) unless the reference is too old
    or the case is rated (一次一评); the case's invitations still open are withdrawn."""
    case_id, case_time, rated = case
    if check_age and at - case_time > ctx.reference_max_age_s:
        db.execute("UPDATE ratings SET case_id = ? WHERE id = ?", (case_id, rating_id))
        return _unbound(db, rating_id, "too_old")
    if rated is not None:
        db.execute("UPDATE ratings SET binding = 'unbound', unbound_reason = 'already_rated',"
                   " case_id = ? WHERE id = ?", (case_id, rating_id))
        return False
    _bind(db, rating_id, case_id, how, now)
    db.execute("UPDATE invitations SET state = 'cancelling' WHERE case_id = ?"
               " AND state IN ('waiting', 'sent')", (case_id,))
    return True


def bind_case_evidence(db: sqlite_utils.Database, ctx: BindContext, case_id: int, now: float
                       ) -> tuple[list[int], list[int]]:
    """A case was reported: ratings kept for want of it — a scanned receipt or ticket code that
    was unknown (`unknown_reference`), a ticket's rating waiting for its case (`awaiting_case`)
    — bind now, the earliest first; later ones are kept as `already_rated`.

    Returns (rating ids queued for upload, rating ids with a new alert)."""
    c = db.execute("SELECT project_no, ticket, COALESCE(finished_at, received_at) FROM cases"
                   " WHERE id = ?", (case_id,)).fetchone()
    if c is None:
        return [], []
    tickets = [r[0] for r in db.execute("SELECT id FROM tickets WHERE case_id = ?",
                                        (case_id,)).fetchall()]
    marks = ",".join("?" * len(tickets)) or "NULL"
    rows = db.execute(
        "SELECT id, level, ref, assess_time FROM ratings WHERE binding = 'unbound' AND"
        " ((unbound_reason = 'unknown_reference' AND ref IN (?, ?)) OR"
        f" (unbound_reason = 'awaiting_case' AND ticket_id IN ({marks})))"
        " ORDER BY assess_time, id", (c[0], c[1] or c[0], *tickets)).fetchall()
    queued, alerted = [], []
    for rid, level, ref, at in rows:
        rated = db.execute("SELECT rated_rating_id FROM cases WHERE id = ?",
                           (case_id,)).fetchone()[0]
        how = "reference" if ref is not None else "ticket"
        if _bind_evidence(db, ctx, rid, (case_id, c[2], rated), at, how, now,
                          check_age=ref is not None):
            queued.append(rid)
            if 4 <= level <= 5 and ctx.alert_targets:
                _add_alerts(db, ctx, rid, "bad_rating_case", now)
                alerted.append(rid)
    return queued, alerted


_OPEN_INVITATION = ("SELECT 1 FROM invitations i WHERE i.case_id = {case}"
                    " AND i.state IN ('waiting', 'sent') AND i.expires_at > ?"
                    " AND i.device_id IS NOT NULL")


def _unbound(db, rating_id: int, reason: str) -> bool:
    db.execute("UPDATE ratings SET binding = 'unbound', unbound_reason = ? WHERE id = ?",
               (reason, rating_id))
    return False


def _bind(db, rating_id: int, case_id: int, how: str, now: float) -> bool:
    rated = db.execute("SELECT rated_rating_id FROM cases WHERE id = ?", (case_id,)).fetchone()
    if rated is not None and rated[0] is not None:
        # one rating per case per assessNumber: keep it, list it, never upload it as the first
        db.execute("UPDATE ratings SET binding = 'unbound', unbound_reason = 'case_already_rated',"
                   " case_id = ? WHERE id = ?", (case_id, rating_id))
        return False
    db.execute("UPDATE ratings SET binding = ?, unbound_reason = NULL, case_id = ?,"
               " assess_number = 1, bound_at = ? WHERE id = ?", (how, case_id, now, rating_id))
    db.execute("UPDATE cases SET rated_rating_id = ? WHERE id = ?", (rating_id, case_id))
    gid = db.execute("SELECT global_id FROM ratings WHERE id = ?", (rating_id,)).fetchone()[0]
    # the upload job is born in the same transaction as the binding
    db.execute("INSERT INTO outbox(rating_id, global_id, state, next_at, created_at)"
               " VALUES (?, ?, 'pending', ?, ?)", (rating_id, gid, now, now))
    return True


def bind_late(db: sqlite_utils.Database, ctx: BindContext, case_id: int, now: float
              ) -> tuple[list[int], list[int]]:
    """On intake: bind the latest unbound unsolicited press of the case's window (≤ binding window).

    Returns (rating ids queued for upload, rating ids with a new alert).
    """
    case = db.execute("SELECT window, accepted_at, rated_rating_id FROM cases WHERE id = ?",
                      (case_id,)).fetchone()
    if case is None or case[2] is not None or ctx.unsolicited.get(case[0], "keep") != "infer":
        return [], []
    if db.execute(_OPEN_INVITATION.format(case="?"), (case_id, now)).fetchone():
        return [], []      # its citizen may still answer the invitation: decide when it ends
    row = db.execute(
        "SELECT id, level FROM ratings WHERE binding = 'unbound' AND unbound_reason = 'no_case'"
        " AND window = ? AND received_at >= ? AND received_at >= ?"
        " ORDER BY received_at DESC, id DESC LIMIT 1",
        (case[0], now - ctx.binding_window_s, case[1] - SKEW_S)).fetchone()
    if row is None:
        return [], []
    _bind(db, row[0], case_id, "late_case", now)
    alerted = []
    if 4 <= row[1] <= 5 and ctx.alert_targets:
        _add_alerts(db, ctx, row[0], "bad_rating_case", now)
        alerted.append(row[0])
    return [row[0]], alerted


def close_expired(db: sqlite_utils.Database, ctx: BindContext, now: float
                  ) -> tuple[list[int], list[int]]:
    """Mark invitations past their lifetime 'expired' and give their unrated cases the late
    binding they were held back from. Returns (rating ids queued, rating ids alerted)."""
    rows = db.execute("SELECT DISTINCT case_id FROM invitations WHERE state IN ('waiting', 'sent')"
                      " AND expires_at <= ? AND case_id IS NOT NULL", (now,)).fetchall()
    db.execute("UPDATE invitations SET state = 'expired' WHERE state IN ('waiting', 'sent')"
               " AND expires_at <= ?", (now,))
    if not rows:
        return [], []
    return bind_cases_late(db, ctx, [r[0] for r in rows], now)


def bind_cases_late(db: sqlite_utils.Database, ctx: BindContext, case_ids: list[int],
                    now: float) -> tuple[list[int], list[int]]:
    """bind_late for several cases (oldest first); returns the combined lists."""
    queued, alerted = [], []
    for case_id in sorted(case_ids):
        q, a = bind_late(db, ctx, case_id, now)
        queued += q
        alerted += a
    return queued, alerted


def hall_time(ts: float) -> str:
    """ISO 8601 in hall time (China Standard Time, UTC+8, no daylight saving)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(ts + 8 * 3600))


def alert_payload(db, ctx: BindContext, rating_id: int, kind: str) -> dict:
    """The 差评 alert body: window, staff, level, reasons (codes and names), case number, the
    console link — no rater data."""
    r = db.execute("SELECT global_id, device_id, window, level, reasons, assess_time, case_id,"
                   " binding, flags FROM ratings WHERE id = ?", (rating_id,)).fetchone()
    payload: dict[str, Any] = {
        "type": kind, "ratingId": r[0], "deviceId": r[1], "window": r[2],
        "windowName": ctx.window_names.get(r[2] or "", r[2]), "level": r[3],
        "levelName": LEVEL_NAMES.get(r[3], "?"), "reasons": json.loads(r[4]),
        "time": hall_time(r[5]),
        "binding": r[7], "projectNo": None, "staff": None, "taskName": None,
    }
    payload["reasonNames"] = ctx.reasons.names_for(payload["reasons"], r[8], r[3])
    payload["link"] = (f"{ctx.console_url}/worklist/{r[0]}" if ctx.console_url and r[6]
                       is not None else None)
    if r[6] is not None:
        c = db.execute("SELECT project_no, staff_id, staff_name, task_name FROM cases"
                       " WHERE id = ?", (r[6],)).fetchone()
        payload.update(projectNo=c[0], staff={"id": c[1], "name": c[2]}, taskName=c[3])
    return payload


def _add_alerts(db, ctx: BindContext, rating_id: int, kind: str, now: float) -> None:
    body = json.dumps(alert_payload(db, ctx, rating_id, kind), ensure_ascii=False)
    for target in ctx.alert_targets:
        db.execute("INSERT OR IGNORE INTO alerts(rating_id, kind, target, payload, state,"
                   " next_at, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                   (rating_id, kind, target, body, now, now))
