"""The upload jobs in SQLite: rating jobs (`outbox`, one per bound rating, written with the
binding) and service records (`upstream_services`, one per case and service number, for the
service-first profiles). Reads run on the agent's reader connection; writes run inside the
writer's group transaction (`op(db)` functions), one transaction per settled batch.

States: pending → done (the province confirmed; `duplicate` when it said it already had it) or
parked (refused; `hcp agent outbox retry` releases). A rating of a service-first profile is due
only once its case's service record is done; a parked service record parks its pending ratings
with the reason, so nothing waits silently.
"""
from __future__ import annotations

import json
from typing import Iterable

from .profiles.base import RATING, SERVICE, Job, Outcome

REPUSH_LIMIT = 5     # "没有对应的服务数据" after this many re-pushes of the service: park the rating

_RATING_COLS = ("id", "global_id", "attempts", "level", "assess_time", "assess_number",
                "reasons", "flags", "cat_version", "case_id", "binding", "written")


def add_service(db, case_id: int, now: float, service_number: int = 1) -> None:
    """Queue the service record of a case (idempotent)."""
    db.execute("INSERT OR IGNORE INTO upstream_services(case_id, service_number, state, next_at,"
               " created_at) VALUES (?, ?, 'pending', ?, ?)",
               (case_id, service_number, now, now))


def ensure_services(db, now: float) -> int:
    """Service records for cases that have a rating job but none yet (cases stored before a
    service-first profile was configured). Returns how many were queued."""
    cur = db.execute(
        "INSERT OR IGNORE INTO upstream_services(case_id, service_number, state, next_at,"
        " created_at) SELECT DISTINCT r.case_id, 1, 'pending', ?, ? FROM outbox o JOIN ratings r"
        " ON r.id = o.rating_id WHERE o.state != 'done' AND r.case_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM upstream_services s WHERE s.case_id = r.case_id)", (now, now))
    return cur.rowcount


def due_services(db, now: float, limit: int, busy: set[int]) -> list[Job]:
    """Pending service records due now, oldest first, leaving out those in flight."""
    rows = db.execute(
        "SELECT id, case_id, service_number, attempts FROM upstream_services WHERE state ="
        " 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
        (now, limit + len(busy))).fetchall()
    rows = [r for r in rows if r[0] not in busy][:limit]
    cases = _cases(db, [r[1] for r in rows])
    return [Job(SERVICE, r[0], f"S-{cases[r[1]]['project_no']}-{r[2]}", r[3], cases[r[1]],
                service_number=r[2]) for r in rows]


def due_ratings(db, now: float, limit: int, busy: set[int], need_service: bool) -> list[Job]:
    """Pending rating jobs due now, oldest first; with `need_service` only those whose case's
    service record is confirmed."""
    gate = (" AND EXISTS (SELECT 1 FROM upstream_services s WHERE s.case_id = r.case_id AND"
            " s.state = 'done')") if need_service else ""
    rows = db.execute(
        "SELECT o.id, o.global_id, o.attempts, r.level, r.assess_time, r.assess_number,"
        " r.reasons, r.flags, r.cat_version, r.case_id, r.binding,"
        # a paper form's 文字评价 copied from the paper (devices have none)
        " (SELECT p.written FROM paper_forms p WHERE p.rating_id = r.id)"
        " FROM outbox o JOIN ratings r ON"
        f" r.id = o.rating_id WHERE o.state = 'pending' AND o.next_at <= ?{gate}"
        " ORDER BY o.next_at, o.id LIMIT ?", (now, limit + len(busy))).fetchall()
    rows = [dict(zip(_RATING_COLS, r)) for r in rows if r[0] not in busy][:limit]
    cases = _cases(db, [r["case_id"] for r in rows])
    jobs = []
    for r in rows:
        rating = {k: r[k] for k in ("level", "assess_time", "flags", "cat_version")}
        rating["paper"] = r["binding"] == "paper"
        rating["written"] = r["written"] or ""
        rating["assess_number"] = r["assess_number"] or 1
        rating["reasons"] = json.loads(r["reasons"])
        jobs.append(Job(RATING, r["id"], r["global_id"], r["attempts"], cases[r["case_id"]],
                        rating=rating))
    return jobs


def _cases(db, ids: Iterable[int]) -> dict[int, dict]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    cur = db.execute(f"SELECT * FROM cases WHERE id IN ({','.join('?' * len(ids))})", ids)
    names = [d[0] for d in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def next_due(db, now: float, need_service: bool) -> float:
    """When the next pending job falls due (now + 5 s when nothing is pending)."""
    times = [db.execute("SELECT MIN(next_at) FROM outbox WHERE state = 'pending'").fetchone()[0]]
    if need_service:
        times.append(db.execute("SELECT MIN(next_at) FROM upstream_services WHERE state ="
                                " 'pending'").fetchone()[0])
    times = [t for t in times if t is not None]
    return min(times) if times else now + 5.0


def settle(db, kind: str, results: list[tuple[Job, Outcome, str | None]], now: float,
           retry_at: float) -> None:
    """Write every job's outcome of one reply (one transaction with the caller's batch).

    `results` holds (job, outcome, upstream_ref); `retry_at` is when retried jobs fall due.
    """
    table = "outbox" if kind == RATING else "upstream_services"
    for job, out, ref in results:
        reason = out.reason[:500]
        if out.kind == "done":
            if kind == RATING:
                db.execute("UPDATE outbox SET state = 'done', done_at = ?, attempts = attempts + 1,"
                           " last_attempt_at = ?, upstream_reply = ?, last_error = NULL,"
                           " duplicate = ?, upstream_ref = ? WHERE id = ?",
                           (now, now, reason[:200], int(out.duplicate), ref, job.id))
            else:
                db.execute("UPDATE upstream_services SET state = 'done', done_at = ?, attempts ="
                           " attempts + 1, last_attempt_at = ?, upstream_reply = ?, last_error ="
                           " NULL, duplicate = ? WHERE id = ?",
                           (now, now, reason[:200], int(out.duplicate), job.id))
        elif out.kind == "park" or (out.kind == "repush" and job.attempts + 1 >= REPUSH_LIMIT):
            if out.kind == "repush":
                reason = (f"{reason} — 已重推服务数据 {REPUSH_LIMIT} 次仍无 (still no service record "
                          f"after {REPUSH_LIMIT} re-pushes)")[:500]
            db.execute(f"UPDATE {table} SET state = 'parked', attempts = attempts + 1,"
                       " last_attempt_at = ?, last_error = ? WHERE id = ?", (now, reason, job.id))
            if kind == SERVICE:
                park_waiting_ratings(db, job.case["id"], f"service record refused: {reason}",
                                     now)
        elif out.kind == "repush":
            # the rating waits until its service record is confirmed again
            db.execute("UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?,"
                       " next_at = ?, last_error = ? WHERE id = ?", (now, now, reason, job.id))
            db.execute("UPDATE upstream_services SET state = 'pending', next_at = ?,"
                       " last_error = ? WHERE case_id = ? AND service_number = ?",
                       (now, f"re-push: {reason}"[:500], job.case["id"], job.service_number))
        else:
            db.execute(f"UPDATE {table} SET attempts = attempts + 1, last_attempt_at = ?,"
                       " next_at = ?, last_error = ? WHERE id = ?",
                       (now, retry_at, reason, job.id))


def park_waiting_ratings(db, case_id: int, reason: str, now: float) -> None:
    """Park the pending rating jobs of a case whose service record was refused."""
    db.execute("UPDATE outbox SET state = 'parked', last_attempt_at = ?, last_error = ? WHERE"
               " state = 'pending' AND rating_id IN (SELECT id FROM ratings WHERE case_id = ?)",
               (now, reason[:500], case_id))


_BLOCKED = ("SELECT o.id FROM outbox o JOIN ratings r ON r.id = o.rating_id JOIN upstream_services"
            " s ON s.case_id = r.case_id WHERE o.state = 'pending' AND s.state = 'parked'")


def blocked(db) -> bool:
    """True if a pending rating waits on a parked service record (it must park too)."""
    return db.execute(_BLOCKED + " LIMIT 1").fetchone() is not None


def park_blocked(db, now: float) -> int:
    """Park pending ratings whose case's service record is parked, with that reason."""
    cur = db.execute(
        "UPDATE outbox SET state = 'parked', last_attempt_at = ?, last_error = 'service record"
        " refused: ' || (SELECT s.last_error FROM ratings r JOIN upstream_services s ON"
        " s.case_id = r.case_id WHERE r.id = outbox.rating_id AND s.state = 'parked' LIMIT 1)"
        f" WHERE id IN ({_BLOCKED})", (now,))
    return cur.rowcount


def counts(db) -> dict[str, int]:
    """Service records by state."""
    return dict(db.execute("SELECT state, COUNT(*) FROM upstream_services GROUP BY state")
                .fetchall())
