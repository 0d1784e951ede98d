"""Console benchmark: the overview and the statistics page of a hall with 1,000,000 ratings.

Target (issue 12): each answers in ≤ 300 ms. The database is built directly with SQL in the
agent's schema (ratings over two years at 10 windows, 40 staff, 120 matters — 12 per window —,
~6 % 差评 with reasons), rolled up by the console's own `rollup.roll_forward`, then the views' query functions
are timed. Baseline measured in the same run: one full scan counting every rating
(`SELECT COUNT(*) ... GROUP BY level` over the table), i.e. what a page without rollups and
indexes would pay at least once.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

N = 1_000_000
DAYS = 730
WINDOWS = [f"A{i:02d}" for i in range(1, 11)]


def build(path: str, n: int = N) -> float:
    """Create the hall database; returns the seconds the rollup took."""
    from edge_agent.console import rollup
    from edge_agent.store import open_database
    db = open_database(path)
    conn = db.conn
    conn.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(12)
    now = time.time()
    start = now - DAYS * 86400
    staff = [(f"S{i:03d}", f"员工{i:03d}", WINDOWS[i % len(WINDOWS)]) for i in range(40)]
    tasks = [(f"TASK-{i:03d}", f"事项{i:03d}（虚构）") for i in range(120)]
    with db.atomic():
        case_rows, rating_rows = [], []
        for i in range(1, n + 1):
            t = start + (i / n) * DAYS * 86400
            sid, sname, window = staff[rnd.randrange(len(staff))]
            # a window handles its own matters (不动产窗: 不动产 matters), 12 each
            w = WINDOWS.index(window)
            tcode, tname = tasks[w * 12 + rnd.randrange(12)]
            r = rnd.random()
            level = 1 if r < .6 else 2 if r < .82 else 3 if r < .94 else 4 if r < .98 else 5
            reasons = [(2 if level == 4 else 1) * 100 + rnd.randrange(1, 12)] \
                if level >= 4 else []
            case_rows.append((i, f"P{i:08d}", window, tcode, tname, "D", "测试局", "371402", sid,
                              sname, b"x", '{"name":"测*"}', t - 600, t - 60, 2, 3, t - 60, i))
            rating_rows.append((i, 1001 + WINDOWS.index(window), i, f"B-{i}", int(t), t, "device",
                                t, i, 1, level, 0, json.dumps(reasons), window, i, "invitation",
                                1, t))
            if len(case_rows) == 50000:
                _flush(conn, case_rows, rating_rows)
        _flush(conn, case_rows, rating_rows)
    t0 = time.perf_counter()
    while True:
        with db.atomic():
            if rollup.roll_forward(db, now + 3600, batch=100_000) == 0:
                break
    took = time.perf_counter() - t0
    conn.execute("ANALYZE")
    db.close()
    return took


def _flush(conn, case_rows, rating_rows) -> None:
    conn.executemany("INSERT INTO cases(id, project_no, window, task_code, task_name, dept_code,"
                     " dept_name, area_code, staff_id, staff_name, applicant_sealed,"
                     " applicant_masked, accepted_at, finished_at, promise_type, status,"
                     " received_at, rated_rating_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     case_rows)
    conn.executemany("INSERT INTO ratings(id, device_id, rseq, global_id, device_time,"
                     " assess_time, time_source, received_at, invite_id, cat_version, level,"
                     " flags, reasons, window, case_id, binding, assess_number, bound_at)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rating_rows)
    case_rows.clear()
    rating_rows.clear()


def _time(fn, runs: int = 5) -> float:
    fn()   # warm the page cache once, as a running agent's reader has it
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1000


def report(n: int = N) -> str:
    from edge_agent.catalogue import ReasonBook
    from edge_agent.console import queries
    from edge_agent.store import connect
    root = Path(__file__).resolve().parent.parent.parent
    book = ReasonBook.from_file(str(root / "edge_agent" / "deploy" / "catalogue.seed-0.json"))
    names = {w: f"窗口{w}" for w in WINDOWS}
    with tempfile.TemporaryDirectory(prefix="hcp-console-bench-") as tmp:
        path = str(Path(tmp) / "agent.db")
        t0 = time.perf_counter()
        rollup_s = build(path, n)
        build_s = time.perf_counter() - t0
        db = connect(path, readonly=True)
        now = time.time()
        today = queries.hall_day(now)
        base = _time(lambda: db.execute("SELECT level, COUNT(*) FROM ratings NOT INDEXED"
                                        " GROUP BY level").fetchall())
        rows = [
            ("overview (hall)", lambda: queries.overview(db, now, None, 5)),
            ("overview (window staff)", lambda: queries.overview(db, now, "A03", 5)),
            ("statistics, this month to date", lambda: queries.statistics(
                db, today.replace(day=1), today, None, book, names)),
            ("statistics, last 30 days", lambda: queries.statistics(
                db, today - dt.timedelta(days=29), today, None, book, names)),
            ("statistics, last 365 days", lambda: queries.statistics(
                db, today - dt.timedelta(days=365), today, None, book, names, "month")),
            ("statistics, all 2 years", lambda: queries.statistics(
                db, today - dt.timedelta(days=DAYS + 1), today, None, book, names, "month")),
            ("worklist, first page", lambda: queries.worklist(db, now, None, book, 5, names)),
        ]
        lines = [f"console: {n:,} ratings over {DAYS} days (built in {build_s:.1f} s, "
                 f"rollup {rollup_s:.1f} s); target ≤ 300 ms per page",
                 f"  baseline: one full scan of ratings          {base:8.1f} ms"]
        for name, fn in rows:
            ms = _time(fn)
            verdict = "ok" if ms <= 300 else "OVER TARGET"
            lines.append(f"  {name:<42}{ms:8.1f} ms  ({ms / base:5.2f}× baseline)  {verdict}")
        db.close()
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
