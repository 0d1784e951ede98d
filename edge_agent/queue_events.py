"""The hall's queue system (排队叫号): tickets and what happens to them, and the evidence they give.

`POST /v1/queue/events` (authenticated like cases, edge_agent/intake_auth.py) takes one event:

    {"eventId": "QS-20261121-000123", "type": "called", "ticket": "20261121A023",
     "at": "2026-11-21 10:02:11", "window": "A01", "staff": {"id": "S001", "name": "张三"}}

| type | means | needs |
|---|---|---|
| `issued` | the ticket was printed | — |
| `called` | called to `window` by `staff` | window, staff {id, name} |
| `started` | service at the window began | window |
| `finished` | service at the window ended | window |
| `no_show` | called, nobody came | window |

`ticket` is the ticket's code exactly as its QR code holds it (what a waiting-area evaluator
scans): printable ASCII without spaces, ≤ 64 characters, unique within TICKET_REUSE_S (a system
that numbers A001… afresh every day is fine). `eventId` makes a report idempotent per client: a
second post with the same id changes nothing and answers 200.

What the agent does with it: a `called` followed by a `finished` at the same window opens that
window's service for the ticket — the window's evaluator is invited to rate it, exactly as for a
case report, unless the ticket's case was already reported (its invitation is already there).
The rating then binds through the ticket to its case: at once if a case report named the ticket
(`"ticket"` in `POST /v1/cases`), else when one does (kept as `awaiting_case` until then). A
scanned ticket code in the waiting area binds the same way. Events never bind a rating by
themselves and never make up a case.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from . import binding, intake_audit, invitations
from .cases import TICKET, check_text, check_time

EVENT_TYPES = ("issued", "called", "started", "finished", "no_show")
_NEED_WINDOW = ("called", "started", "finished", "no_show")
_EVENT_ID = re.compile(r"[0-9A-Za-z_.:\-]{1,64}")
# a ticket code seen again after this long is a new ticket (numbers restart every day)
TICKET_REUSE_S = 12 * 3600


@dataclass(frozen=True)
class QueueEvent:
    """A validated queue event."""
    event_id: str
    type: str
    ticket: str
    at: float
    window: str | None
    staff_id: str | None
    staff_name: str | None


def validate_event(body: Any, windows: set[str]) -> tuple[QueueEvent | None, list[dict]]:
    """Check every field; returns (event, []) or (None, [{"field", "error"}, ...])."""
    if not isinstance(body, dict):
        return None, [{"field": "(body)", "error": "请求体应为 JSON 对象 body must be a JSON object"}]
    errors: list[dict] = []

    def err(field: str, msg: str) -> None:
        errors.append({"field": field, "error": msg})

    def text(obj: dict, key: str, path: str, max_len: int, pattern: re.Pattern | None = None,
             required: bool = True) -> str | None:
        return check_text(errors, obj, key, path, max_len, pattern, required)

    event_id = text(body, "eventId", "eventId", 64, _EVENT_ID)
    etype = text(body, "type", "type", 16)
    if etype is not None and etype not in EVENT_TYPES:
        err("type", "应为 must be one of " + ", ".join(EVENT_TYPES))
        etype = None
    ticket = text(body, "ticket", "ticket", 64, TICKET)
    at = check_time(errors, body, "at", "at")
    window = text(body, "window", "window", 32, required=etype in _NEED_WINDOW)
    if window is not None and window not in windows:
        err("window", "未配置的窗口 window is not configured in hall.toml")
        window = None
    staff_id = staff_name = None
    staff = body.get("staff")
    if staff is not None or etype == "called":
        if not isinstance(staff, dict):
            err("staff", "必填对象 required object {id, name}")
        else:
            staff_id = text(staff, "id", "staff.id", 32)
            staff_name = text(staff, "name", "staff.name", 30)
    if errors:
        return None, errors
    return QueueEvent(event_id=event_id, type=etype, ticket=ticket, at=at, window=window,
                      staff_id=staff_id, staff_name=staff_name), []


def ticket_for(db: sqlite_utils.Database, code: str, now: float, create: bool = True
               ) -> int | None:
    """The current ticket row with this code (created less than TICKET_REUSE_S ago), made when
    missing and `create` (a queue system need not report `issued`)."""
    row = db.execute("SELECT id FROM tickets WHERE ticket = ? AND created_at > ?"
                     " ORDER BY created_at DESC, id DESC LIMIT 1",
                     (code, now - TICKET_REUSE_S)).fetchone()
    if row is not None:
        return row[0]
    if not create:
        return None
    return db.execute("INSERT INTO tickets(ticket, state, created_at) VALUES (?, 'issued', ?)",
                      (code, now)).lastrowid


@dataclass
class Applied:
    """What storing an event did (the reply, and an invitation to deliver after COMMIT)."""
    created: bool
    ticket_id: int
    state: str
    service_opened: bool = False
    note: str | None = None
    invite_id: int | None = None
    device_id: int | None = None
    superseded: tuple[int, ...] = ()
    staff: tuple[str, str] = ("", "")
    queued: tuple[int, ...] = ()
    alerted: tuple[int, ...] = ()

    def reply(self, ev: QueueEvent) -> dict:
        return {"created": self.created, "eventId": ev.event_id, "ticket": ev.ticket,
                "state": self.state, "serviceOpened": self.service_opened, "note": self.note,
                "inviteId": self.invite_id}


def apply_event(db: sqlite_utils.Database, ctx: binding.BindContext, client_id: str,
                ev: QueueEvent, devices: dict[str, int], lifetime_s: int, now: float) -> Applied:
    """Store one event (idempotent by (client, eventId)) and, on call + finish at a window with
    an evaluator, open the ticket's service there. `devices`: window -> device id."""
    dup = db.execute("SELECT ticket_id FROM queue_events WHERE client_id = ? AND event_id = ?",
                     (client_id, ev.event_id)).fetchone()
    if dup is not None:
        st = db.execute("SELECT state FROM tickets WHERE id = ?", (dup[0],)).fetchone()
        return Applied(created=False, ticket_id=dup[0], state=st[0])
    tid = ticket_for(db, ev.ticket, now)
    t = db.execute("SELECT window, case_id, state FROM tickets WHERE id = ?", (tid,)).fetchone()
    out = Applied(created=True, ticket_id=tid, state=t[2])
    if ev.type == "issued":
        db.execute("UPDATE tickets SET issued_at = COALESCE(issued_at, ?) WHERE id = ?",
                   (ev.at, tid))
    elif ev.type == "called":
        db.execute("UPDATE tickets SET window = ?, staff_id = ?, staff_name = ?, called_at = ?,"
                   " state = 'called' WHERE id = ?",
                   (ev.window, ev.staff_id, ev.staff_name, ev.at, tid))
        out.state = "called"
    elif ev.type == "started":
        db.execute("UPDATE tickets SET started_at = ?, state = 'serving' WHERE id = ?",
                   (ev.at, tid))
        out.state = "serving"
    elif ev.type == "no_show":
        db.execute("UPDATE tickets SET no_show_at = ?, state = 'no_show' WHERE id = ?",
                   (ev.at, tid))
        out.state = "no_show"
    elif ev.type == "finished":
        db.execute("UPDATE tickets SET finished_at = ?, state = 'finished' WHERE id = ?",
                   (ev.at, tid))
        out.state = "finished"
        _open_service(db, ctx, out, tid, t[0], t[1], ev, devices, lifetime_s, now)
    db.execute("INSERT INTO queue_events(client_id, event_id, type, ticket_id, window, staff_id,"
               " at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (client_id, ev.event_id, ev.type, tid, ev.window, ev.staff_id, ev.at, now))
    return out


def _open_service(db, ctx, out: Applied, tid: int, called_window: str | None,
                  case_id: int | None, ev: QueueEvent, devices: dict[str, int],
                  lifetime_s: int, now: float) -> None:
    if called_window is None or called_window != ev.window:
        out.note = "not_called_here"        # no call to this window: no evidence of the service
        return
    if db.execute("SELECT 1 FROM invitations WHERE ticket_id = ? OR (case_id = ? AND case_id"
                  " IS NOT NULL)", (tid, case_id)).fetchone():
        out.note = "already_invited"        # the case report (or an earlier finish) invited
        return
    if case_id is not None and db.execute("SELECT rated_rating_id FROM cases WHERE id = ?",
                                          (case_id,)).fetchone()[0] is not None:
        out.note = "already_rated"
        return
    device_id = devices.get(ev.window)
    if device_id is None:
        out.note = "no_device"
        return
    staff = db.execute("SELECT staff_id, staff_name FROM tickets WHERE id = ?",
                       (tid,)).fetchone()
    invite_id, superseded, queued, alerted = invitations.open_invitation(db, ctx, device_id, case_id, tid,
                                                             lifetime_s, now)
    out.service_opened = True
    out.invite_id, out.device_id, out.superseded = invite_id, device_id, tuple(superseded)
    out.staff = (staff[0] or "", staff[1] or "")
    out.queued, out.alerted = tuple(queued), tuple(alerted)


def link_case(db: sqlite_utils.Database, ctx: binding.BindContext, case_id: int,
              ticket: str | None, now: float) -> tuple[list[int], list[int], bool]:
    """A case was stored: link it to the ticket it names (and that ticket's service invitation),
    then bind the ratings that waited for it (binding.bind_case_evidence).

    Returns (rating ids queued, rating ids alerted, True when the case needs no invitation of
    its own: its ticket's service already invited the window, or it is rated already)."""
    skip = False
    if ticket is not None:
        tid = ticket_for(db, ticket, now)
        linked = db.execute("SELECT case_id FROM tickets WHERE id = ?", (tid,)).fetchone()[0]
        if linked is None:
            db.execute("UPDATE tickets SET case_id = ? WHERE id = ?", (case_id, tid))
            n = db.execute("UPDATE invitations SET case_id = ? WHERE ticket_id = ? AND case_id"
                           " IS NULL", (case_id, tid)).rowcount
            skip = n > 0
    queued, alerted = binding.bind_case_evidence(db, ctx, case_id, now)
    rated = db.execute("SELECT rated_rating_id FROM cases WHERE id = ?", (case_id,)).fetchone()
    return queued, alerted, skip or rated[0] is not None


def window_devices(config: Any) -> dict[str, int]:
    """window -> the id of its (first) evaluator."""
    out: dict[str, int] = {}
    for d in config.devices:
        if d.window is not None and d.window not in out:
            out[d.window] = d.id
    return out


async def intake_event(agent: Any, admitted: Any) -> tuple[int, dict]:
    """Handle a `POST /v1/queue/events` body from an authenticated client (intake_auth.Admitted):
    validate, check the client may report for the window, store with its audit row in one
    transaction, then deliver the invitation a finished service opened. Returns (status, reply).
    """
    client = admitted.client
    body = admitted.body
    ref = body.get("eventId") if isinstance(body, dict) else None

    async def refused(status: int, outcome: str, reply: dict) -> tuple[int, dict]:
        await agent.writer.write(lambda db: intake_audit.record(
            db, client.id, "queue", status, outcome, ref if isinstance(ref, str) else None,
            admitted.signature, admitted.remote))
        return status, reply

    ev, errors = validate_event(body, {w.id for w in agent.config.windows})
    if ev is None:
        return await refused(422, "invalid", {"error": "invalid_event", "message":
                                              "排队事件数据有误 invalid queue event",
                                              "fields": errors})
    if ev.window is not None and not client.may_report(ev.window):
        return await refused(403, "window_not_allowed", {
            "error": "window_not_allowed", "message": "该客户端无权上报此窗口 this client may "
            "not report for this window (hall.toml clients.windows)",
            "fields": [{"field": "window", "error": "not allowed for this client"}]})
    now = time.time()
    ctx, devices = agent.ctx, window_devices(agent.config)
    lifetime = agent.config.invite_lifetime_s

    def op(db):
        applied = apply_event(db, ctx, client.id, ev, devices, lifetime, now)
        intake_audit.record(db, client.id, "queue", 201 if applied.created else 200,
                            "created" if applied.created else "duplicate", ev.event_id,
                            admitted.signature, admitted.remote, now)
        return applied
    applied = await agent.writer.write(op)
    if applied.queued:
        agent.uploader.wake()
    if applied.alerted:
        agent.alerts.wake()
    if applied.invite_id is not None:
        await agent.deliver_invite(applied.device_id, applied.invite_id,
                                   list(applied.superseded), *applied.staff)
    return (201 if applied.created else 200), applied.reply(ev)
