"""The console's read side: every SQL query the pages use, returning plain data dicts.

Views call these and hand the result to a template AND to the `.json` twin, so both show the
same thing. Rater data is decided here, never in a template: supervisors get the masked form
stored at intake (张*, 3714**********1234), window staff and technicians get none at all.

Scope: `window=None` is the whole hall; a window id limits everything to that window (window
staff). Counted ratings are those bound to a case (they are what reaches the province); unbound
ones are listed on the devices page with their reason.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import sqlite_utils

from ..binding import LEVEL_NAMES, hall_time
from ..catalogue import ReasonBook
from . import rollup
from .workdays import add_workdays

BAD_LEVELS = (4, 5)
GOOD_LEVELS = (1, 2, 3)
FOLLOWUP_STATES = {"pending": "待回访", "called": "已回访（核实情况）", "rectifying": "整改中",
                   "feedback": "已反馈"}
APPEAL_STATES = {"filed": "已申诉，待复核", "upheld": "复核：申诉成立", "rejected": "复核：申诉不成立"}
PAPER_STATES = {"entered": "待复核确认", "confirmed": "已确认", "rejected": "已退回",
                "queued": "已进入上传队列"}
UNBOUND_REASONS = {
    "no_case": "窗口无可对应的办件", "unknown_invitation": "评价邀请未知",
    "invitation_device_mismatch": "邀请属于其他评价器", "case_already_rated": "该办件已有评价",
    "invalid_level": "评价等级无效", "unknown_device": "未配置的评价器",
    "unsolicited": "无邀请的按键（未绑定，按窗口设置保留）",
    "unknown_reference": "扫描的小票或回执无法识别", "awaiting_case": "等待办件上报",
    "already_rated": "该办件已有评价（一次一评）", "too_old": "小票或回执已过期"}
OFFLINE_REASONS = {
    "agent_restart": "代理重启后尚未重新连接", "serial_lost": "串口连接中断",
    "serial_unavailable": "串口无法打开",
    "serial_replaced": "串口设备已更换（重新插拔），正在重新打开",
    "serial_silent": "串口长时间无数据（设备断电、死机或线路故障）",
    "mqtt_offline": "MQTT 报告离线（设备断开或遗嘱消息）",
    "link_down": "链路断开"}
TREND_DAYS = 30
WORKLIST_PAGE = 50          # rows per worklist page
AUDIT_PAGE = 100
REASON_NONE = 0             # stat_reason code of a 差评 without a tag
CST = dt.timezone(dt.timedelta(hours=8))


# ---------------------------------------------------------------- helpers


def _rows(db: sqlite_utils.Database, sql: str, params: tuple = ()) -> list[dict]:
    cur = db.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def hall_day(ts: float) -> dt.date:
    """The hall (China time) date of a unix time."""
    return dt.datetime.fromtimestamp(ts, CST).date()


def day_start(day: dt.date) -> float:
    """Unix time of 00:00 hall time on `day`."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=CST).timestamp()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else hall_time(ts)


def _pct(part: int, whole: int) -> float | None:
    return None if not whole else round(100.0 * part / whole, 1)


def _summary(levels: dict[int, int]) -> dict:
    total = sum(levels.values())
    good = sum(levels.get(lv, 0) for lv in GOOD_LEVELS)
    bad = sum(levels.get(lv, 0) for lv in BAD_LEVELS)
    return {"total": total, "good": good, "bad": bad, "satisfaction": _pct(good, total),
            "badRate": _pct(bad, total),
            "byLevel": [{"level": lv, "name": LEVEL_NAMES[lv], "n": levels.get(lv, 0)}
                        for lv in range(1, 6)]}


def _scope_sql(window: str | None, col: str = "window") -> tuple[str, tuple]:
    return ("", ()) if window is None else (f" AND {col} = ?", (window,))


def _tail(db: sqlite_utils.Database, d0: dt.date, d1: dt.date, window: str | None,
          with_case: bool = False) -> list[dict]:
    """Counted ratings not yet in the rollups, with assess day in [d0, d1]."""
    scope, args = _scope_sql(window, "r.window")
    case_cols = (", c.staff_id, c.task_code, r.reasons" if with_case else "")
    join = " JOIN cases c ON c.id = r.case_id" if with_case else ""
    # unary + keeps the level/time index out: only the rowid range (the tail) may drive this
    return _rows(db, f"SELECT {rollup.DAY_SQL.format(col='r.assess_time')} AS day,"
                     f" COALESCE(r.window, '') AS window, r.level{case_cols}"
                     f" FROM ratings r{join} WHERE r.id > ? AND +r.binding != 'unbound'"
                     " AND +r.level BETWEEN 1 AND 5"
                     " AND +r.assess_time >= ? AND +r.assess_time < ?" + scope,
                 (rollup.rolled_to(db), day_start(d0), day_start(d1 + dt.timedelta(days=1)),
                  *args))


def daily_levels(db: sqlite_utils.Database, d0: dt.date, d1: dt.date, window: str | None
                 ) -> dict[str, dict[int, int]]:
    """{day: {level: n}} for counted ratings with assess day in [d0, d1]."""
    scope, args = _scope_sql(window)
    out: dict[str, dict[int, int]] = {}
    for day, level, n in db.execute(
            "SELECT day, level, SUM(n) FROM stat_window WHERE day BETWEEN ? AND ?" + scope +
            " GROUP BY day, level", (d0.isoformat(), d1.isoformat(), *args)).fetchall():
        out.setdefault(day, {})[level] = n
    for r in _tail(db, d0, d1, window):
        lv = out.setdefault(r["day"], {})
        lv[r["level"]] = lv.get(r["level"], 0) + 1
    return out


def _sum_levels(daily: dict[str, dict[int, int]], d0: dt.date, d1: dt.date) -> dict[int, int]:
    out: dict[int, int] = {}
    a, b = d0.isoformat(), d1.isoformat()
    for day, levels in daily.items():
        if a <= day <= b:
            for lv, n in levels.items():
                out[lv] = out.get(lv, 0) + n
    return out


# ---------------------------------------------------------------- follow-ups and deadlines


def overdue_through(today: dt.date, workdays: int) -> dt.date:
    """The latest rating day whose follow-up deadline is already past on `today`: a 差评 of
    that day or earlier that is not 已反馈 is overdue. (Deadlines grow with the day.)"""
    day = today
    while add_workdays(day, workdays).day >= today:
        day -= dt.timedelta(days=1)
    return day


def deadline_of(assess_time: float, workdays: int) -> dict:
    d = add_workdays(hall_day(assess_time), workdays)
    return {"deadline": d.day.isoformat(), "deadlineCertain": d.certain}


def followup_counts(db: sqlite_utils.Database, window: str | None, today: dt.date,
                    workdays: int, since: dt.date | None = None) -> dict:
    """Open and overdue 差评 follow-ups, and 回访率 (called back / all) since `since`."""
    scope, args = _scope_sql(window, "r.window")
    overdue_before = day_start(overdue_through(today, workdays) + dt.timedelta(days=1))
    since_ts = day_start(since) if since else 0.0
    row = db.execute(
        "SELECT COUNT(*),"
        " SUM(CASE WHEN COALESCE(f.state, 'pending') != 'feedback' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN COALESCE(f.state, 'pending') != 'feedback' AND r.assess_time < ?"
        "     THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN r.assess_time >= ? THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN r.assess_time >= ? AND COALESCE(f.state, 'pending') != 'pending'"
        "     THEN 1 ELSE 0 END)"
        " FROM ratings r INDEXED BY ratings_level_time"
        " LEFT JOIN followups f ON f.rating_id = r.id"
        " WHERE r.level IN (4, 5) AND r.binding != 'unbound'" + scope,
        (overdue_before, since_ts, since_ts, *args)).fetchone()
    bad_since, called_since = row[3] or 0, row[4] or 0
    return {"all": row[0] or 0, "open": row[1] or 0, "overdue": row[2] or 0,
            "since": since.isoformat() if since else None, "badSince": bad_since,
            "calledSince": called_since, "callbackRate": _pct(called_since, bad_since)}


# ---------------------------------------------------------------- devices


def _offline_reason(info: dict, last_seen: float | None) -> str | None:
    if info.get("online"):
        return None
    if last_seen is None:
        return "从未连接（未开通、未接线或未通电）"
    code = str(info.get("offline_reason") or "")
    kind, _, detail = code.partition(":")
    text = OFFLINE_REASONS.get(kind)
    if text is None:
        text = "链路断开" if not code else code
    return f"{text}：{detail.strip()}" if detail.strip() else text


def device_list(db: sqlite_utils.Database, window: str | None = None) -> list[dict]:
    """Every device with its state; offline ones with the reason we know."""
    scope, args = _scope_sql(window)
    out = []
    for d in _rows(db, "SELECT * FROM devices WHERE 1 = 1" + scope + " ORDER BY device_id",
                   args):
        info = json.loads(d["info"] or "{}")
        info["online"] = bool(d["online"])
        last_rseq = db.execute("SELECT MAX(rseq) FROM ratings WHERE device_id = ?",
                               (d["device_id"],)).fetchone()[0]
        out.append({
            "deviceId": d["device_id"], "window": d["window"], "online": bool(d["online"]),
            "offlineReason": _offline_reason(info, d["last_seen"]),
            "lastSeen": _iso(d["last_seen"]), "lastHello": _iso(info.get("hello_at")),
            "firmware": info.get("firmware"), "link": info.get("link"),
            "backlog": info.get("backlog"), "journalFull": bool(info.get("journal_full")),
            "clockSynced": info.get("clock"), "lastError": info.get("error") or None,
            "sessions": info.get("session"), "cumAck": d["cum_ack"], "lastRseq": last_rseq})
    return out


# ---------------------------------------------------------------- overview


def overview(db: sqlite_utils.Database, now: float, window: str | None, workdays: int) -> dict:
    """总览: today / week / month, per-level bars, the 30-day trend, follow-ups, devices."""
    today = hall_day(now)
    week0 = today - dt.timedelta(days=today.weekday())
    month0 = today.replace(day=1)
    first = min(month0, week0, today - dt.timedelta(days=TREND_DAYS - 1))
    daily = daily_levels(db, first, today, window)
    periods = []
    for key, label, d0 in (("today", "今日", today), ("week", "本周", week0),
                           ("month", "本月", month0)):
        periods.append({"key": key, "label": label, "from": d0.isoformat(),
                        "to": today.isoformat(), **_summary(_sum_levels(daily, d0, today))})
    trend = []
    for i in range(TREND_DAYS - 1, -1, -1):
        d = today - dt.timedelta(days=i)
        s = _summary(daily.get(d.isoformat(), {}))
        trend.append({"day": d.isoformat(), "total": s["total"], "bad": s["bad"],
                      "satisfaction": s["satisfaction"]})
    scope, args = _scope_sql(window)
    unbound = db.execute("SELECT COUNT(*) FROM ratings WHERE binding = 'unbound'" + scope,
                         args).fetchone()[0]
    outbox = dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    return {"today": today.isoformat(), "window": window, "periods": periods, "trend": trend,
            "followups": followup_counts(db, window, today, workdays, month0),
            "devices": device_list(db, window), "unbound": unbound,
            "uploads": {"pending": outbox.get("pending", 0), "parked": outbox.get("parked", 0)},
            "workdays": workdays}


# ---------------------------------------------------------------- statistics


def _grouped(db: sqlite_utils.Database, table: str, col: str, d0: dt.date, d1: dt.date,
             window: str | None, tail: list[dict]) -> dict[str, dict[int, int]]:
    scope, args = _scope_sql(window)
    out: dict[str, dict[int, int]] = {}
    for key, level, n in db.execute(
            f"SELECT {col}, level, SUM(n) FROM {table} WHERE day BETWEEN ? AND ?" + scope +
            f" GROUP BY {col}, level", (d0.isoformat(), d1.isoformat(), *args)).fetchall():
        out.setdefault(key, {})[level] = n
    for r in tail:
        lv = out.setdefault(r[col], {})
        lv[r["level"]] = lv.get(r["level"], 0) + 1
    return out


def _names(db: sqlite_utils.Database, kind: str, codes: list[str]) -> dict[str, str]:
    if not codes:
        return {}
    marks = ",".join("?" * len(codes))
    named = dict(db.execute(f"SELECT code, name FROM stat_names WHERE kind = ? AND code IN"
                            f" ({marks})", (kind, *codes)).fetchall())
    missing = [c for c in codes if c not in named]
    if missing:   # the tail: names of cases not rolled up yet
        col, name = ("staff_id", "staff_name") if kind == "staff" else ("task_code", "task_name")
        marks = ",".join("?" * len(missing))
        named.update(db.execute(f"SELECT {col}, MAX({name}) FROM cases WHERE {col} IN ({marks})"
                                f" GROUP BY {col}", missing).fetchall())
    return named


def _ranked(groups: dict[str, dict[int, int]], label: dict[str, str], key_name: str) -> list:
    rows = []
    for key, levels in groups.items():
        rows.append({key_name: key, "name": label.get(key, key), **_summary(levels)})
    # ranking for 通报: 满意率 first, then fewer 差评, then more ratings
    rows.sort(key=lambda r: (-(r["satisfaction"] or 0), r["bad"], -r["total"], r[key_name]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def statistics(db: sqlite_utils.Database, d0: dt.date, d1: dt.date, window: str | None,
               book: ReasonBook, window_names: dict[str, str], period: str = "day") -> dict:
    """统计 for assess days [d0, d1]: by window, staff, matter and period; 差评 clusters."""
    tail = _tail(db, d0, d1, window, with_case=True)
    by_window = _grouped(db, "stat_window", "window", d0, d1, window, tail)
    by_staff = _grouped(db, "stat_staff", "staff_id", d0, d1, window, tail)
    by_task = _grouped(db, "stat_task", "task_code", d0, d1, window, tail)
    staff_names = _names(db, "staff", list(by_staff))
    task_names = _names(db, "task", list(by_task))
    daily = daily_levels(db, d0, d1, window)
    periods: dict[str, dict[int, int]] = {}
    for day, levels in daily.items():
        key = day[:7] if period == "month" else day
        acc = periods.setdefault(key, {})
        for lv, n in levels.items():
            acc[lv] = acc.get(lv, 0) + n
    scope, args = _scope_sql(window)
    clusters: dict[tuple[str, int], int] = {}
    for task, reason, n in db.execute(
            "SELECT task_code, reason, SUM(n) FROM stat_reason WHERE day BETWEEN ? AND ?" +
            scope + " GROUP BY task_code, reason", (d0.isoformat(), d1.isoformat(),
                                                    *args)).fetchall():
        clusters[(task, reason)] = n
    for r in tail:
        if r["level"] in BAD_LEVELS:
            for code in json.loads(r["reasons"]) or [REASON_NONE]:
                k = (r["task_code"], int(code))
                clusters[k] = clusters.get(k, 0) + 1
    # a tag has one code per 差评 level (207 不满意, 107 非常不满意): cluster by the tag's name
    named: dict[tuple[str, str], int] = {}
    for (task, code), n in clusters.items():
        key = (task, _reason_name(book, code))
        named[key] = named.get(key, 0) + n
    by_reason: dict[str, int] = {}
    for (_, name), n in named.items():
        by_reason[name] = by_reason.get(name, 0) + n
    staff_rows = _ranked(by_staff, staff_names, "staffId")
    for r in staff_rows:
        r["label"] = f"{r['staffId']} {r['name']}"
    return {
        "from": d0.isoformat(), "to": d1.isoformat(), "window": window, "period": period,
        "total": _summary(_sum_levels(daily, d0, d1)),
        "byWindow": _ranked(by_window, window_names, "window"),
        "byStaff": staff_rows,
        "byTask": _ranked(by_task, task_names, "taskCode"),
        "byPeriod": [{"period": k, **_summary(v)} for k, v in sorted(periods.items())],
        "badByReason": sorted(({"name": name, "n": n} for name, n in by_reason.items()),
                              key=lambda x: (-x["n"], x["name"])),
        "badClusters": sorted(({"taskCode": t, "taskName": task_names.get(t, t),
                                "reasonName": name, "n": n} for (t, name), n in named.items()),
                              key=lambda x: (-x["n"], x["taskCode"], x["reasonName"]))[:30],
    }


def _reason_name(book: ReasonBook, code: int) -> str:
    return "未选择具体原因" if code == REASON_NONE else book.name(code)


# ---------------------------------------------------------------- the 差评 worklist


def _rater(case: dict, role: str) -> dict | None:
    """What of the rater a role may see: supervisors the masked form, nobody more."""
    if role != "supervisor" or not case.get("applicant_masked"):
        return None
    m = json.loads(case["applicant_masked"])
    return {"name": m.get("name"), "certNo": m.get("certNo"), "phone": m.get("phone"),
            "userProp": {1: "个人", 2: "法人"}.get(m.get("userProp"), "")}


def _bad_row(r: dict, book: ReasonBook, workdays: int, today: dt.date,
             window_names: dict[str, str]) -> dict:
    state = r.get("f_state") or "pending"
    dl = deadline_of(r["assess_time"], workdays)
    return {
        "ratingId": r["global_id"], "level": r["level"], "levelName": LEVEL_NAMES[r["level"]],
        "reasons": book.names_for(json.loads(r["reasons"]), r["flags"], r["level"]),
        "assessTime": _iso(r["assess_time"]), "window": r["window"],
        "windowName": window_names.get(r["window"] or "", r["window"]),
        "projectNo": r["project_no"], "taskCode": r["task_code"], "taskName": r["task_name"],
        "staffId": r["staff_id"], "staffName": r["staff_name"], "binding": r["binding"],
        "state": state, "stateName": FOLLOWUP_STATES[state], "assignee": r.get("f_assignee"),
        **dl, "overdue": state != "feedback" and today > dt.date.fromisoformat(dl["deadline"]),
        "appeal": APPEAL_STATES.get(r.get("appeal_state") or "", None),
    }


_BAD_SELECT = (
    "SELECT r.id, r.global_id, r.level, r.reasons, r.flags, r.assess_time, r.window, r.binding,"
    " c.project_no, c.task_code, c.task_name, c.staff_id, c.staff_name,"
    " f.state AS f_state, f.assignee AS f_assignee,"
    " (SELECT a.state FROM appeals a WHERE a.rating_id = r.id ORDER BY a.id DESC LIMIT 1)"
    "   AS appeal_state"
    " FROM ratings r JOIN cases c ON c.id = r.case_id"
    " LEFT JOIN followups f ON f.rating_id = r.id"
    " WHERE r.level IN (4, 5) AND r.binding != 'unbound'")


def worklist(db: sqlite_utils.Database, now: float, window: str | None, book: ReasonBook,
             workdays: int, window_names: dict[str, str], state: str | None = None,
             overdue_only: bool = False, page: int = 1) -> dict:
    """差评工作台: every bound 差评, newest first, with its follow-up state and deadline."""
    today = hall_day(now)
    where, args = "", []
    if window is not None:
        where += " AND r.window = ?"
        args.append(window)
    if state in FOLLOWUP_STATES:
        where += " AND COALESCE(f.state, 'pending') = ?"
        args.append(state)
    if overdue_only:
        where += " AND COALESCE(f.state, 'pending') != 'feedback' AND r.assess_time < ?"
        args.append(day_start(overdue_through(today, workdays) + dt.timedelta(days=1)))
    page = max(1, page)
    # pick the page from the covering index first, then join cases for those rows only
    pick = ("SELECT r.id FROM ratings r INDEXED BY ratings_level_time"
            " LEFT JOIN followups f ON f.rating_id = r.id"
            " WHERE r.level IN (4, 5) AND r.binding != 'unbound'" + where +
            " ORDER BY r.assess_time DESC, r.id DESC LIMIT ? OFFSET ?")
    rows = _rows(db, _BAD_SELECT + f" AND r.id IN ({pick})"
                 " ORDER BY r.assess_time DESC, r.id DESC",
                 (*args, WORKLIST_PAGE + 1, (page - 1) * WORKLIST_PAGE))
    more = len(rows) > WORKLIST_PAGE
    items = [_bad_row(r, book, workdays, today, window_names) for r in rows[:WORKLIST_PAGE]]
    return {"items": items, "page": page, "more": more, "filters": {
        "state": state if state in FOLLOWUP_STATES else None, "overdue": overdue_only},
        "states": FOLLOWUP_STATES,
        "followups": followup_counts(db, window, today, workdays, today.replace(day=1)),
        "workdays": workdays}


def bad_rating(db: sqlite_utils.Database, global_id: str, now: float, role: str,
               book: ReasonBook, workdays: int, window_names: dict[str, str]) -> dict | None:
    """One 差评 with its case (rater as the role may see it), follow-up history and appeals."""
    rows = _rows(db, _BAD_SELECT + " AND r.global_id = ?", (global_id,))
    if not rows:
        return None
    r = rows[0]
    item = _bad_row(r, book, workdays, hall_day(now), window_names)
    case = _rows(db, "SELECT c.* FROM cases c JOIN ratings r ON r.case_id = c.id"
                     " WHERE r.id = ?", (r["id"],))[0]
    item["case"] = {"projectNo": case["project_no"], "taskCode": case["task_code"],
                    "taskName": case["task_name"], "deptName": case["dept_name"],
                    "acceptedAt": _iso(case["accepted_at"]),
                    "finishedAt": _iso(case["finished_at"])}
    item["rater"] = _rater(case, role)
    item["events"] = [{"at": _iso(e["at"]), "by": e["username"],
                       "from": FOLLOWUP_STATES[e["from_state"]],
                       "to": FOLLOWUP_STATES[e["to_state"]], "assignee": e["assignee"],
                       "note": e["note"]}
                      for e in _rows(db, "SELECT * FROM followup_events WHERE rating_id = ?"
                                         " ORDER BY at, id", (r["id"],))]
    item["appeals"] = [{"id": a["id"], "filedBy": a["filed_by"], "filedAt": _iso(a["filed_at"]),
                        "reason": a["reason"], "state": a["state"],
                        "stateName": APPEAL_STATES[a["state"]], "outcomeNote": a["outcome_note"],
                        "decidedBy": a["decided_by"], "decidedAt": _iso(a["decided_at"])}
                       for a in _rows(db, "SELECT * FROM appeals WHERE rating_id = ?"
                                          " ORDER BY id", (r["id"],))]
    upload = db.execute("SELECT state FROM outbox WHERE rating_id = ?", (r["id"],)).fetchone()
    item["upload"] = upload[0] if upload else None
    return item


def rating_scope(db: sqlite_utils.Database, global_id: str) -> dict | None:
    """The window and staff of a bound 差评 (for permission checks), None if no such 差评."""
    rows = _rows(db, "SELECT r.id, r.window, c.staff_id, r.level FROM ratings r JOIN cases c"
                     " ON c.id = r.case_id WHERE r.global_id = ? AND r.level IN (4, 5)"
                     " AND r.binding != 'unbound'", (global_id,))
    return rows[0] if rows else None


# ---------------------------------------------------------------- devices page


def devices_page(db: sqlite_utils.Database, book: ReasonBook, limit: int = 200) -> dict:
    """设备: devices, parked uploads with their reasons, unbound ratings with theirs."""
    parked = [{"id": r["id"], "ratingId": r["global_id"], "attempts": r["attempts"],
               "createdAt": _iso(r["created_at"]), "lastAttemptAt": _iso(r["last_attempt_at"]),
               "reason": r["last_error"], "projectNo": r["project_no"]}
              for r in _rows(db, "SELECT o.*, c.project_no FROM outbox o JOIN ratings r ON"
                                 " r.id = o.rating_id LEFT JOIN cases c ON c.id = r.case_id"
                                 " WHERE o.state = 'parked' ORDER BY o.id LIMIT ?", (limit,))]
    unbound = [{"ratingId": r["global_id"], "deviceId": r["device_id"], "window": r["window"],
                "level": r["level"], "levelName": LEVEL_NAMES.get(r["level"], "?"),
                "reasons": book.names_for(json.loads(r["reasons"]), r["flags"], r["level"])
                if 1 <= r["level"] <= 5 else [],
                "assessTime": _iso(r["assess_time"]), "receivedAt": _iso(r["received_at"]),
                "unboundReason": UNBOUND_REASONS.get(r["unbound_reason"] or "",
                                                     r["unbound_reason"])}
               for r in _rows(db, "SELECT * FROM ratings WHERE binding = 'unbound'"
                                  " ORDER BY id DESC LIMIT ?", (limit,))]
    outbox = dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    oldest = db.execute("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'").fetchone()[0]
    return {"devices": device_list(db), "parked": parked, "unbound": unbound,
            "uploads": {"pending": outbox.get("pending", 0), "parked": outbox.get("parked", 0),
                        "done": outbox.get("done", 0),
                        "oldestPendingAgeS": round(time.time() - oldest, 1) if oldest else 0}}


# ---------------------------------------------------------------- exports


def export_rows(db: sqlite_utils.Database, d0: dt.date, d1: dt.date, window: str | None,
                book: ReasonBook, role: str, window_names: dict[str, str]) -> list[dict]:
    """Counted ratings with assess day in [d0, d1] for 导出: reasons by name, rater masked
    (supervisors) or left out (everyone else)."""
    scope, args = _scope_sql(window, "r.window")
    out = []
    for r in _rows(db, "SELECT r.global_id, r.level, r.reasons, r.flags, r.assess_time,"
                       " r.window, r.binding, c.project_no, c.task_code, c.task_name,"
                       " c.staff_id, c.staff_name, c.applicant_masked, f.state AS f_state"
                       " FROM ratings r JOIN cases c ON c.id = r.case_id"
                       " LEFT JOIN followups f ON f.rating_id = r.id"
                       f" WHERE {rollup.COUNTED} AND r.assess_time >= ? AND r.assess_time < ?"
                       + scope + " ORDER BY r.assess_time, r.id",
                   (day_start(d0), day_start(d1 + dt.timedelta(days=1)), *args)):
        rater = _rater(r, role) or {}
        bad = r["level"] in BAD_LEVELS
        out.append({
            "评价编号": r["global_id"], "评价时间": _iso(r["assess_time"]),
            "窗口": r["window"], "窗口名称": window_names.get(r["window"] or "", r["window"]),
            "工号": r["staff_id"], "姓名": r["staff_name"], "事项编码": r["task_code"],
            "事项名称": r["task_name"], "办件编号": r["project_no"],
            "评价等级": LEVEL_NAMES[r["level"]],
            "差评原因": "；".join(book.names_for(json.loads(r["reasons"]), r["flags"],
                                                  r["level"])),
            "回访状态": FOLLOWUP_STATES[r["f_state"] or "pending"] if bad else "",
            "评价人": rater.get("name", ""), "评价人证件号": rater.get("certNo", ""),
            "评价人电话": rater.get("phone", "")})
    return out


# ---------------------------------------------------------------- paper forms, audit


def paper_forms(db: sqlite_utils.Database, book: ReasonBook, limit: int = 200) -> list[dict]:
    """Paper forms, newest first, with who entered and who checked them."""
    return [{"id": r["id"], "projectNo": r["project_no"], "window": r["window"],
             "level": r["level"], "levelName": LEVEL_NAMES[r["level"]],
             "reasons": book.names_for(json.loads(r["reasons"])), "written": r["written"],
             "ratedOn": r["rated_on"], "state": r["state"], "stateName": PAPER_STATES[r["state"]],
             "enteredBy": r["entered_by"], "enteredAt": _iso(r["entered_at"]),
             "checkedBy": r["checked_by"], "checkedAt": _iso(r["checked_at"]),
             "rejectReason": r["reject_reason"], "scanType": r["scan_type"]}
            for r in _rows(db, "SELECT p.*, c.project_no, c.window FROM paper_forms p"
                               " JOIN cases c ON c.id = p.case_id ORDER BY p.id DESC LIMIT ?",
                           (limit,))]


def paper_form(db: sqlite_utils.Database, form_id: int) -> dict | None:
    rows = _rows(db, "SELECT * FROM paper_forms WHERE id = ?", (form_id,))
    return rows[0] if rows else None


def audit_log(db: sqlite_utils.Database, page: int = 1) -> dict:
    """审计: who did or viewed what, newest first."""
    page = max(1, page)
    rows = _rows(db, "SELECT * FROM console_audit ORDER BY id DESC LIMIT ? OFFSET ?",
                 (AUDIT_PAGE + 1, (page - 1) * AUDIT_PAGE))
    return {"page": page, "more": len(rows) > AUDIT_PAGE,
            "items": [{"at": _iso(r["at"]), "user": r["username"], "action": r["action"],
                       "target": r["target"], "detail": r["detail"], "ip": r["ip"]}
                      for r in rows[:AUDIT_PAGE]]}


def catalogue_choices(book: ReasonBook) -> list[dict[str, Any]]:
    """Reason tags for the paper-form entry, in catalogue (= device screen) order."""
    return [{"tag": tag, "name": name} for tag, _, _, name in book.tags]
