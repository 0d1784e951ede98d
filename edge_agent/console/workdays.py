"""Working days in mainland China: public holidays and adjusted working days (调休).

The 差评 follow-up deadline (整改反馈) counts working days after the day of the rating (seed
000: 5). Holidays and the weekend days made working days come from the `chinese-calendar`
package, which carries the State Council's notices year by year; for a year it does not know
yet (the notice comes out each November), Monday–Friday is used and the result says so, so a
deadline is never presented as certain when it is not.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import chinese_calendar


@dataclass(frozen=True)
class Deadline:
    """The last working day to report back, and whether every day counted was in the calendar."""
    day: dt.date
    certain: bool


@lru_cache(maxsize=4096)
def is_workday(day: dt.date) -> tuple[bool, bool]:
    """(working day?, known from the official calendar?)"""
    try:
        return bool(chinese_calendar.is_workday(day)), True
    except NotImplementedError:   # a year the package has no notice for yet
        return day.weekday() < 5, False


@lru_cache(maxsize=4096)
def add_workdays(start: dt.date, n: int) -> Deadline:
    """The n-th working day after `start` (the day of the rating does not count)."""
    day, counted, certain = start, 0, True
    while counted < n:
        day += dt.timedelta(days=1)
        work, known = is_workday(day)
        certain = certain and known
        if work:
            counted += 1
    return Deadline(day, certain)
