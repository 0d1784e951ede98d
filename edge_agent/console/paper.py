"""纸质评价 paper forms (书面评价表格) from service points without a device: entry, four-eyes
confirmation, and the hand-over to the upload queue.

Rules: a form is entered for a KNOWN case only (never without one, never for a case that already
has a rating or another form), with a photo or scan of the paper kept on disk; a second user
confirms it (四眼原则: never the one who entered it); every step is audited.

Upload: confirming a form turns it into a bound rating with an upload job in the same
transaction (`hand_to_outbox`, the one place that does it), state `queued`. The outbox sends it
like any rating, with the channel the profile's settings give paper forms (`upstream.paper_pf`,
`upstream.paper_channel`: no public interface names a paper channel, see the agent README).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path

import sqlite_utils

from ..catalogue import ReasonBook
from . import audit
from .followups import ActionError

SCAN_MAX_BYTES = 10 * 1024 * 1024     # a phone photo of an A4 form is 2–5 MB
SCAN_TYPES = {b"\xff\xd8\xff": ("image/jpeg", "jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
              b"%PDF-": ("application/pdf", "pdf")}
WRITTEN_MAX = 500
PAPER_DEVICE_ID = 0                  # device id of paper ratings: no real device has id 0


def scan_kind(data: bytes) -> tuple[str, str]:
    """(content type, extension) from the file's own bytes; ActionError if not JPEG/PNG/PDF."""
    if not data:
        raise ActionError("请上传纸质评价表的照片或扫描件")
    if len(data) > SCAN_MAX_BYTES:
        raise ActionError(f"扫描件过大（最大 {SCAN_MAX_BYTES // 1024 // 1024} MB）")
    for magic, kind in SCAN_TYPES.items():
        if data.startswith(magic):
            return kind
    raise ActionError("扫描件应为 JPEG、PNG 或 PDF 文件")


def store_scan(scans_dir: str, data: bytes) -> tuple[str, str, str]:
    """Write the scan durably (temp file, fsync, rename) under its SHA-256; returns
    (file name, sha256, content type). Called before the form's row is committed."""
    ctype, ext = scan_kind(data)
    digest = hashlib.sha256(data).hexdigest()
    folder = Path(scans_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{digest}.{ext}"
    target = folder / name
    if not target.exists():
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, target)
    return name, digest, ctype


def _case(db: sqlite_utils.Database, project_no: str) -> tuple[int, float]:
    row = db.execute("SELECT id, rated_rating_id, accepted_at FROM cases WHERE project_no = ?",
                     (project_no,)).fetchone()
    if row is None:
        raise ActionError("无此办件编号：纸质评价只能录入已报送的办件")
    if row[1] is not None:
        raise ActionError("该办件已有评价（一次一评），不能再录入纸质评价")
    if db.execute("SELECT 1 FROM paper_forms WHERE case_id = ? AND state IN ('entered',"
                  " 'confirmed', 'queued')", (row[0],)).fetchone():
        raise ActionError("该办件已有纸质评价在录入或确认流程中")
    return int(row[0]), float(row[2])


def validate(book: ReasonBook, level: int, tags: list[str], written: str, rated_on: str,
             today: dt.date) -> tuple[list[int], str, dt.date]:
    """Check the entered fields; returns (reason codes, written text, date)."""
    if level not in (1, 2, 3, 4, 5):
        raise ActionError("请选择评价等级")
    written = (written or "").strip()
    if len(written) > WRITTEN_MAX:
        raise ActionError(f"文字评价过长（最多 {WRITTEN_MAX} 字）")
    codes = []
    if level >= 4:
        try:
            codes = [book.code(t, level) for t in tags]
        except KeyError:
            raise ActionError("所选差评原因不在评价标签目录中") from None
        if not codes and not written:
            raise ActionError("差评须勾选原因或填写文字评价（照抄纸质表上的内容）")
    elif tags:
        raise ActionError("只有差评（不满意、非常不满意）填写差评原因")
    try:
        day = dt.date.fromisoformat(rated_on)
    except (TypeError, ValueError):
        raise ActionError("评价日期格式应为 YYYY-MM-DD") from None
    if day > today:
        raise ActionError("评价日期不能晚于今天")
    return codes, written, day


def enter(db: sqlite_utils.Database, project_no: str, level: int, codes: list[int],
          written: str, day: dt.date, scan: tuple[str, str, str], username: str,
          ip: str | None = None) -> int:
    """Record a validated paper form as `entered` (awaiting the second user)."""
    case_id, accepted_at = _case(db, (project_no or "").strip())
    accepted_day = dt.datetime.fromtimestamp(accepted_at, dt.timezone(dt.timedelta(hours=8)))
    if day < accepted_day.date():
        raise ActionError("评价日期早于办件受理日期")
    now = time.time()
    cur = db.execute(
        "INSERT INTO paper_forms(case_id, level, reasons, written, rated_on, scan_file,"
        " scan_sha256, scan_type, state, entered_by, entered_at) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, 'entered', ?, ?)",
        (case_id, level, json.dumps(codes), written, day.isoformat(), scan[0], scan[1], scan[2],
         username, now))
    audit.record(db, username, "paper_entered", project_no, f"form {cur.lastrowid}", ip, now)
    return int(cur.lastrowid)


def check(db: sqlite_utils.Database, form_id: int, username: str, confirm: bool,
          reason: str = "", ip: str | None = None, hall_code: str = "",
          cat_version: int = 0) -> int | None:
    """The second user confirms (or sends back) an entered form; never its own entry. A
    confirmed form goes to the upload queue at once (`hand_to_outbox`); returns its rating id
    (None when sent back). `cat_version`: the catalogue its reason codes were chosen from."""
    row = db.execute("SELECT state, entered_by, case_id FROM paper_forms WHERE id = ?",
                     (form_id,)).fetchone()
    if row is None:
        raise ActionError("无此纸质评价")
    if row[0] != "entered":
        raise ActionError("该纸质评价已处理过")
    if row[1] == username:
        raise ActionError("须由录入人以外的另一人确认（四眼原则）")
    if confirm and db.execute("SELECT rated_rating_id FROM cases WHERE id = ?",
                              (row[2],)).fetchone()[0] is not None:
        raise ActionError("该办件在录入后已收到评价（一次一评），请退回此纸质评价")
    reason = (reason or "").strip()
    if not confirm and not reason:
        raise ActionError("请填写退回原因")
    db.execute("UPDATE paper_forms SET state = ?, checked_by = ?, checked_at = ?,"
               " reject_reason = ? WHERE id = ?",
               ("confirmed" if confirm else "rejected", username, time.time(),
                None if confirm else reason[:200], form_id))
    audit.record(db, username, "paper_confirmed" if confirm else "paper_rejected",
                 f"form {form_id}", None if confirm else reason[:200], ip)
    return hand_to_outbox(db, hall_code, form_id, cat_version) if confirm else None


def hand_to_outbox(db: sqlite_utils.Database, hall_code: str, form_id: int,
                   cat_version: int, now: float | None = None) -> int:
    """Turn a confirmed paper form into a bound rating with an upload job, in one transaction
    (the caller's). Returns the rating id.

    The rating: device 0 (no device), rseq = form id, global id `{hall}-P-{form id}`,
    `time_source = 'paper'`, `binding = 'paper'`, the form's reason codes, flags 0. The paper
    gives a date, not a time: the assess time is 00:00 hall time of that date, or the case's
    acceptance if that was later the same day (a rating never precedes its case, which the
    provinces check).
    """
    now = time.time() if now is None else now
    row = db.execute("SELECT p.state, p.case_id, p.level, p.reasons, p.rated_on, c.window,"
                     " c.rated_rating_id, c.accepted_at FROM paper_forms p JOIN cases c ON"
                     " c.id = p.case_id"
                     " WHERE p.id = ?", (form_id,)).fetchone()
    if row is None or row[0] != "confirmed":
        raise ActionError("只有已确认的纸质评价可以进入上传队列")
    state, case_id, level, reasons, rated_on, window, rated, accepted_at = row
    if rated is not None:
        raise ActionError("该办件已有评价（一次一评）")
    day = dt.date.fromisoformat(rated_on)
    start = dt.datetime(day.year, day.month, day.day,
                        tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
    assess = max(start, min(float(accepted_at), start + 86399))
    gid = f"{hall_code}-P-{form_id}"
    cur = db.execute(
        "INSERT INTO ratings(device_id, rseq, global_id, device_time, assess_time, time_source,"
        " received_at, invite_id, cat_version, level, flags, reasons, window, case_id, binding,"
        " assess_number, bound_at) VALUES (?, ?, ?, ?, ?, 'paper', ?, 0, ?, ?, 0, ?, ?, ?,"
        " 'paper', 1, ?)",
        (PAPER_DEVICE_ID, form_id, gid, int(assess), assess, now, cat_version, level, reasons,
         window, case_id, now))
    rating_id = int(cur.lastrowid)
    db.execute("UPDATE cases SET rated_rating_id = ? WHERE id = ?", (rating_id, case_id))
    db.execute("INSERT INTO outbox(rating_id, global_id, state, next_at, created_at)"
               " VALUES (?, ?, 'pending', ?, ?)", (rating_id, gid, now, now))
    db.execute("UPDATE paper_forms SET state = 'queued', rating_id = ? WHERE id = ?",
               (rating_id, form_id))
    return rating_id
