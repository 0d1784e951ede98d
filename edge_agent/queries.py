"""Read-side views shared by the HTTP API and the CLI. Rater data appears only masked.

Every function takes a `sqlite_utils.Database` (a reader connection) and returns plain data.
"""
from __future__ import annotations

import json
import time

import sqlite_utils

from .binding import hall_time
from .levels import LEVEL_NAMES


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return hall_time(ts)


def _rows(db: sqlite_utils.Database, sql: str, params: tuple = ()) -> list[dict]:
    cur = db.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def invitation_state(state: str, expires_at: float, now: float) -> str:
    """Stored state, with 'expired' shown for an open invitation past its lifetime."""
    if state in ("waiting", "sent") and now >= expires_at:
        return "expired"
    return state


def case_state(db: sqlite_utils.Database, project_no: str) -> dict | None:
    """A case and its rating state, applicant masked. None if unknown."""
    rows = _rows(db, "SELECT * FROM cases WHERE project_no = ?", (project_no,))
    if not rows:
        return None
    c = rows[0]
    now = time.time()
    invites = [{"inviteId": i["invite_id"], "deviceId": i["device_id"],
                "state": invitation_state(i["state"], i["expires_at"], now),
                "createdAt": _iso(i["created_at"]), "expiresAt": _iso(i["expires_at"])}
               for i in _rows(db, "SELECT * FROM invitations WHERE case_id = ? ORDER BY created_at",
                              (c["id"],))]
    rating = None
    if c["rated_rating_id"] is not None:
        r = _rows(db, "SELECT r.*, o.state AS upload_state, o.last_error AS upload_error"
                      " FROM ratings r LEFT JOIN outbox o ON o.rating_id = r.id WHERE r.id = ?",
                  (c["rated_rating_id"],))[0]
        rating = _rating_view(r)
    others = [_rating_view(r) for r in _rows(
        db, "SELECT r.*, NULL AS upload_state, NULL AS upload_error FROM ratings r"
            " WHERE r.case_id = ? AND r.binding = 'unbound'", (c["id"],))]
    return {
        "projectNo": c["project_no"], "window": c["window"], "taskCode": c["task_code"],
        "taskName": c["task_name"], "deptName": c["dept_name"],
        "staff": {"id": c["staff_id"], "name": c["staff_name"]},
        "applicant": json.loads(c["applicant_masked"]),
        "acceptedAt": _iso(c["accepted_at"]), "finishedAt": _iso(c["finished_at"]),
        "status": c["status"], "ticket": c.get("ticket"),
        "rated": rating is not None, "rating": rating,
        "invitations": invites, "extraRatings": others,
    }


def _rating_view(r: dict) -> dict:
    return {
        "ratingId": r["global_id"], "deviceId": r["device_id"], "rseq": r["rseq"],
        "level": r["level"], "levelName": LEVEL_NAMES.get(r["level"], "?"),
        "reasons": json.loads(r["reasons"]), "flags": r["flags"],
        "assessTime": _iso(r["assess_time"]), "timeSource": r["time_source"],
        "binding": r["binding"], "unboundReason": r["unbound_reason"],
        "assessNumber": r["assess_number"], "scannedRef": r.get("ref"),
        "upload": r.get("upload_state"),
        "uploadError": r.get("upload_error"),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def press_signals(db: sqlite_utils.Database, t_from: float, t_to: float) -> dict:
    """Misuse signals for the console: per window and per staff member, presses received in
    [t_from, t_to) and how many were unsolicited (no invitation showing) or too fast (< 300 ms
    after the invitation). A window's unsolicited presses count against the staff member on
    duty there (its latest case report or queue call); invited presses against the case's (or
    ticket's) staff. High rates point at presses made for citizens, not by them."""
    rows = _rows(db, """
        SELECT r.window AS window, COALESCE(c.staff_id, t.staff_id, r.duty_staff) AS staff,
               COUNT(*) AS presses, SUM((r.flags & 8) != 0) AS unsolicited,
               SUM((r.flags & 4) != 0) AS too_fast
        FROM ratings r LEFT JOIN cases c ON c.id = r.case_id
             LEFT JOIN tickets t ON t.id = r.ticket_id
        WHERE r.received_at >= ? AND r.received_at < ? AND r.window IS NOT NULL
        GROUP BY r.window, staff""", (t_from, t_to))
    names = dict(db.execute("SELECT staff_id, MAX(staff_name) FROM cases GROUP BY staff_id"
                            ).fetchall())
    windows: dict[str, dict] = {}
    staff: dict[str, dict] = {}
    for r in rows:
        for key, table, extra in ((r["window"], windows, {"window": r["window"]}),
                                  (r["staff"], staff, {"staffId": r["staff"],
                                                       "staffName": names.get(r["staff"])})):
            if key is None:
                continue
            e = table.setdefault(key, {**extra, "presses": 0, "unsolicited": 0, "tooFast": 0})
            e["presses"] += r["presses"]
            e["unsolicited"] += r["unsolicited"]
            e["tooFast"] += r["too_fast"]
    for e in list(windows.values()) + list(staff.values()):
        e["unsolicitedRate"] = _rate(e["unsolicited"], e["presses"])
        e["tooFastRate"] = _rate(e["tooFast"], e["presses"])
    return {"from": _iso(t_from), "to": _iso(t_to),
            "windows": sorted(windows.values(), key=lambda e: e["window"]),
            "staff": sorted(staff.values(), key=lambda e: e["staffId"])}


def waiting_area(db: sqlite_utils.Database) -> dict:
    """Ratings from waiting-area evaluators: stored, bound, and kept unbound by reason."""
    rows = db.execute("SELECT r.binding, r.unbound_reason, COUNT(*) FROM ratings r JOIN devices d"
                      " ON d.device_id = r.device_id WHERE d.role = 'waiting_area'"
                      " GROUP BY r.binding, r.unbound_reason").fetchall()
    return {"ratings": sum(n for _, _, n in rows),
            "bound": sum(n for b, _, n in rows if b != "unbound"),
            "unbound": {reason: n for b, reason, n in rows if b == "unbound"}}


def outbox_counts(db: sqlite_utils.Database) -> dict[str, int]:
    counts = {"pending": 0, "parked": 0, "done": 0}
    for state, n in db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall():
        counts[state] = n
    return counts


def oldest_pending_age(db: sqlite_utils.Database, now: float | None = None) -> float:
    row = db.execute("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'").fetchone()
    if not row or row[0] is None:
        return 0.0
    return max(0.0, (now or time.time()) - row[0])


def ratings_by_level(db: sqlite_utils.Database) -> dict[int, int]:
    return {lvl: n for lvl, n in db.execute(
        "SELECT level, COUNT(*) FROM ratings GROUP BY level").fetchall()}


def devices(db: sqlite_utils.Database) -> list[dict]:
    """Every known device: window, online, last seen, link-reported info, cum_ack, backlog, and
    its HELLOs (`hello`: counter floor, sessions accepted, replays refused, HELLOs left
    unanswered by the rate limit, bursts, last refusal; SPEC §5.3)."""
    out = []
    for d in _rows(db, "SELECT * FROM devices ORDER BY device_id"):
        stored = db.execute("SELECT COUNT(*), MAX(received_at) FROM ratings WHERE device_id = ?",
                            (d["device_id"],)).fetchone()
        out.append({"deviceId": d["device_id"], "window": d["window"],
                    "role": d.get("role", "window"),
                    "online": bool(d["online"]), "lastSeen": _iso(d["last_seen"]),
                    "cumAck": d["cum_ack"], "info": json.loads(d["info"] or "{}"),
                    "ratingsStored": stored[0], "lastRating": _iso(stored[1]),
                    "hello": _hello(d)})
    return out


def _hello(d: dict) -> dict:
    # .get: a database an older agent has not migrated to schema 3 yet has no such columns
    return {"counter": d.get("hello_ctr", 0), "accepted": d.get("hellos", 0),
            "replays": d.get("hello_replays", 0), "limited": d.get("hello_limited", 0),
            "bursts": d.get("hello_bursts", 0), "lastRefused": _iso(d.get("hello_refused_at"))}


def hello_summary(hello: dict) -> str:
    """One line for `hcp agent devices`: what the agent refused, or "-" when nothing."""
    if not (hello["replays"] or hello["limited"] or hello["bursts"]):
        return "-"
    parts = []
    if hello["replays"]:
        parts.append(f"重放 replayed {hello['replays']}")
    if hello["limited"]:
        parts.append(f"限流 limited {hello['limited']}")
    if hello["bursts"]:
        parts.append(f"频繁 bursts {hello['bursts']}")
    if hello["lastRefused"]:
        parts.append(f"last {hello['lastRefused']}")
    return ", ".join(parts)


def status(db: sqlite_utils.Database, hall: dict) -> dict:
    """The agent's state as far as the database tells it (no rater data)."""
    unbound = dict(db.execute("SELECT unbound_reason, COUNT(*) FROM ratings WHERE binding ="
                              " 'unbound' GROUP BY unbound_reason").fetchall())
    alerts = dict(db.execute("SELECT state, COUNT(*) FROM alerts GROUP BY state").fetchall())
    devs = devices(db)
    services = dict(db.execute("SELECT state, COUNT(*) FROM upstream_services GROUP BY state")
                    .fetchall())
    duplicates = db.execute("SELECT COUNT(*) FROM outbox WHERE duplicate = 1").fetchone()[0]
    return {
        "hall": hall, "outbox": outbox_counts(db), "serviceRecords": services,
        "confirmedAsDuplicates": duplicates,
        "oldestPendingAgeS": round(oldest_pending_age(db), 1),
        "ratings": {str(k): v for k, v in ratings_by_level(db).items()},
        "unbound": unbound, "alerts": alerts,
        "devices": {"configured": len(devs), "online": sum(1 for d in devs if d["online"]),
                    # HELLOs refused (SPEC §5.3), over all devices; per device: devices()
                    "helloReplays": sum(d["hello"]["replays"] for d in devs),
                    "helloLimited": sum(d["hello"]["limited"] for d in devs)},
        "cases": db.execute("SELECT COUNT(*) FROM cases").fetchone()[0],
        "waitingArea": waiting_area(db),
    }


def outbox_list(db: sqlite_utils.Database, failed_only: bool = False, limit: int = 200
                ) -> list[dict]:
    """Outbox jobs not done (or only parked ones with `failed_only`), oldest first."""
    where = "o.state = 'parked'" if failed_only else "o.state != 'done'"
    return [{"id": r["id"], "ratingId": r["global_id"], "state": r["state"],
             "attempts": r["attempts"], "createdAt": _iso(r["created_at"]),
             "nextAt": _iso(r["next_at"]), "lastError": r["last_error"],
             "projectNo": r["project_no"]}
            for r in _rows(db, "SELECT o.*, c.project_no FROM outbox o JOIN ratings r ON"
                               " r.id = o.rating_id LEFT JOIN cases c ON c.id = r.case_id"
                               f" WHERE {where} ORDER BY o.id LIMIT ?", (limit,))] + [
        {"id": f"S{r['id']}", "ratingId": f"service #{r['service_number']}", "state": r["state"],
         "attempts": r["attempts"], "createdAt": _iso(r["created_at"]),
         "nextAt": _iso(r["next_at"]), "lastError": r["last_error"],
         "projectNo": r["project_no"]}
        for r in _rows(db, "SELECT s.*, c.project_no FROM upstream_services s JOIN cases c ON"
                           f" c.id = s.case_id WHERE {where.replace('o.', 's.')} ORDER BY s.id"
                           " LIMIT ?", (limit,))]


def unbound_ratings(db: sqlite_utils.Database, limit: int = 500) -> list[dict]:
    """Ratings kept but not uploaded, with the reason."""
    return [_rating_view({**r, "upload_state": None, "upload_error": None})
            for r in _rows(db, "SELECT * FROM ratings WHERE binding = 'unbound' ORDER BY id"
                               " LIMIT ?", (limit,))]


def export_rows(db: sqlite_utils.Database, t_from: float, t_to: float) -> list[dict]:
    """Ratings received in [t_from, t_to), joined with their case, rater data masked."""
    out = []
    for r in _rows(db, "SELECT r.*, c.project_no, c.task_code, c.task_name, c.staff_id,"
                       " c.staff_name, c.applicant_masked, o.state AS upload_state FROM ratings r"
                       " LEFT JOIN cases c ON c.id = r.case_id LEFT JOIN outbox o ON"
                       " o.rating_id = r.id WHERE r.received_at >= ? AND r.received_at < ?"
                       " ORDER BY r.received_at, r.id", (t_from, t_to)):
        applicant = json.loads(r["applicant_masked"]) if r["applicant_masked"] else {}
        out.append({
            "ratingId": r["global_id"], "deviceId": r["device_id"], "rseq": r["rseq"],
            "window": r["window"], "assessTime": _iso(r["assess_time"]),
            "receivedAt": _iso(r["received_at"]), "level": r["level"],
            "levelName": LEVEL_NAMES.get(r["level"], "?"),
            "reasons": ",".join(str(x) for x in json.loads(r["reasons"])),
            "flags": r["flags"], "binding": r["binding"],
            "unboundReason": r["unbound_reason"] or "", "projectNo": r["project_no"] or "",
            "taskName": r["task_name"] or "", "staffId": r["staff_id"] or "",
            "staffName": r["staff_name"] or "", "raterName": applicant.get("name", ""),
            "raterCertNo": applicant.get("certNo", ""), "raterPhone": applicant.get("phone", ""),
            "upload": r["upload_state"] or "",
        })
    return out


def retry_parked(db: sqlite_utils.Database, job_id: int | None = None) -> int:
    """Release parked jobs (one, or all — service records included) back to pending now;
    returns how many."""
    now = time.time()
    with db.atomic():
        if job_id is None:
            cur = db.execute("UPDATE outbox SET state = 'pending', next_at = ? WHERE state ="
                             " 'parked'", (now,))
            services = db.execute("UPDATE upstream_services SET state = 'pending', next_at = ?"
                                  " WHERE state = 'parked'", (now,))
            return cur.rowcount + services.rowcount
        cur = db.execute("UPDATE outbox SET state = 'pending', next_at = ? WHERE state ="
                         " 'parked' AND id = ?", (now, job_id))
        # a rating cannot go before its case's service record: release that too
        db.execute("UPDATE upstream_services SET state = 'pending', next_at = ? WHERE state ="
                   " 'parked' AND case_id = (SELECT r.case_id FROM outbox o JOIN ratings r ON"
                   " r.id = o.rating_id WHERE o.id = ?)", (now, job_id))
        return cur.rowcount
