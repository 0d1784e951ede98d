"""Daily statistics rollups: counts per hall day by window, staff, matter and 差评 reason.

Why: statistics over a year of a busy hall (1,000,000 ratings) cannot join every rating with its
case inside the 300 ms the console allows itself; the rollups hold a few rows per day instead.

What is counted: ratings bound to a case (binding != 'unbound', which is what reaches the
province) — the same rule `queries` applies to the not-yet-rolled tail. A rating is rolled up
once it can no longer change: a press kept as `no_case` may still bind to a case reported within
`binding_window_s`, so only ratings received before `cutoff` are rolled. `stat_mark.rolled_to`
is the highest rating id rolled; rows above it are counted live by `queries` (the tail is
minutes of ratings). Each batch and its mark commit in the same transaction: nothing is counted
twice or skipped.
"""
from __future__ import annotations

import sqlite_utils

# rating ids per write transaction: bounds how long the writer is busy with one batch
BATCH = 20000

DAY_SQL = "date({col} + 28800, 'unixepoch')"   # hall time (UTC+8) day of a unix time
COUNTED = "r.binding != 'unbound' AND r.level BETWEEN 1 AND 5"


def rolled_to(db: sqlite_utils.Database) -> int:
    """The highest rating id already in the rollups."""
    return int(db.execute("SELECT rolled_to FROM stat_mark WHERE id = 1").fetchone()[0])


def roll_forward(db: sqlite_utils.Database, cutoff: float, batch: int = BATCH) -> int:
    """Roll up settled ratings (received before `cutoff`) after the mark, at most `batch` ids.
    Runs inside the writer's transaction; returns how many rating ids were passed."""
    low = rolled_to(db)
    unsettled = db.execute("SELECT MIN(id) FROM ratings WHERE id > ? AND received_at >= ?",
                           (low, cutoff)).fetchone()[0]
    top = db.execute("SELECT MAX(id) FROM ratings").fetchone()[0] or 0
    high = min(top if unsettled is None else unsettled - 1, low + batch)
    if high <= low:
        return 0
    day = DAY_SQL.format(col="r.assess_time")
    rng = (low, high)
    db.execute(
        f"INSERT INTO stat_window(day, window, level, n) SELECT {day}, COALESCE(r.window, ''),"
        f" r.level, COUNT(*) FROM ratings r WHERE r.id > ? AND r.id <= ? AND {COUNTED}"
        " GROUP BY 1, 2, 3 ON CONFLICT(day, window, level) DO UPDATE SET n = n + excluded.n",
        rng)
    for table, col in (("stat_staff", "staff_id"), ("stat_task", "task_code")):
        db.execute(
            f"INSERT INTO {table}(day, window, {col}, level, n) SELECT {day},"
            f" COALESCE(r.window, ''), c.{col}, r.level, COUNT(*) FROM ratings r"
            f" JOIN cases c ON c.id = r.case_id WHERE r.id > ? AND r.id <= ? AND {COUNTED}"
            f" GROUP BY 1, 2, 3, 4 ON CONFLICT(day, window, {col}, level)"
            " DO UPDATE SET n = n + excluded.n", rng)
    # 差评 reasons; a 差评 without a tag (reason screen timed out) counts as reason 0
    db.execute(
        f"INSERT INTO stat_reason(day, window, task_code, reason, n) SELECT {day},"
        " COALESCE(r.window, ''), c.task_code, COALESCE(CAST(j.value AS INTEGER), 0), COUNT(*)"
        " FROM ratings r JOIN cases c ON c.id = r.case_id"
        " LEFT JOIN json_each(r.reasons) j"
        f" WHERE r.id > ? AND r.id <= ? AND {COUNTED} AND r.level >= 4"
        " GROUP BY 1, 2, 3, 4 ON CONFLICT(day, window, task_code, reason)"
        " DO UPDATE SET n = n + excluded.n", rng)
    for kind, code, name in (("staff", "staff_id", "staff_name"),
                             ("task", "task_code", "task_name")):
        db.execute(
            f"INSERT INTO stat_names(kind, code, name) SELECT '{kind}', c.{code}, c.{name}"
            " FROM cases c WHERE c.id IN (SELECT case_id FROM ratings WHERE id > ? AND id <= ?"
            " AND case_id IS NOT NULL) GROUP BY c.id ON CONFLICT(kind, code) DO UPDATE SET"
            " name = excluded.name", rng)
    db.execute("UPDATE stat_mark SET rolled_to = ? WHERE id = 1", (high,))
    return high - low
