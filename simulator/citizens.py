"""Scripted citizens and staff at one window, and the hall's waiting area.

Queue system: a citizen draws a ticket; it is called to a window by its staff, served and
finished (`POST /v1/queue/events`: issued, called, started, finished — signed as the hall's
queue system).

Staff: when a citizen's business is done, the window's business system reports the case to the
agent (`POST /v1/cases`: window, a unique projectNo, the ticket, task, staff {id, name},
synthetic applicant, signed as the business system), which sends the evaluator an invitation.
Sometimes the queue system's `finished` comes first: then the agent opens the ticket's service
itself and the case report only links to it.

Citizens: arrive at random (exponential gaps), are served, then look at the evaluator. Most rate
after a human reaction time; some walk away; some press twice (the second press lands on the
reason screen or is ignored, as on the real device); a 差评 is followed by a reason (sometimes
after turning the page, sometimes none: the reason screen times out). Now and then a passer-by
presses with no invitation showing (an unsolicited press). When the invitation does not show
(device off or cut off), the citizen waits a little, then presses anyway or leaves. Some
citizens leave the window without rating and rate in the waiting area instead: they scan their
queue ticket or their case receipt on a waiting-area evaluator, then rate there.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .device import VirtualDevice
from .synthetic import case_body, china_time

STAFF_NAMES = ("测试员甲", "测试员乙", "测试员丙", "测试员丁", "测试员戊", "测试员己",
               "测试员庚", "测试员辛")


@dataclass
class CitizenProfile:
    """How citizens behave. Times are in seconds of the (compressed) hall session."""

    arrival_s: float = 5.0                       # mean gap between citizens at a window
    service_s: tuple[float, float] = (1.0, 3.0)
    react_s: tuple[float, float] = (0.4, 2.0)   # from the invitation showing to the press
    levels: dict[int, float] = field(default_factory=lambda: {1: 0.55, 2: 0.2, 3: 0.1,
                                                              4: 0.1, 5: 0.05})
    walk_away: float = 0.08                      # leaves without rating
    double_press: float = 0.08                   # presses the level button twice
    no_reason: float = 0.2                       # a 差评 without choosing a reason (timeout)
    page_turn: float = 0.3                       # looks at the next page of reasons first
    unsolicited: float = 0.03                    # a passer-by presses with nothing showing
    invite_wait_s: float = 4.0                   # how long a citizen waits for the invitation
    waiting_area: float = 0.15                   # rates in the waiting area instead
    finish_first: float = 0.3                    # the queue's finish comes before the case

    def level(self, rng: random.Random) -> int:
        r = rng.random() * sum(self.levels.values())
        for lvl, p in sorted(self.levels.items()):
            r -= p
            if r <= 0:
                return lvl
        return max(self.levels)


class Counters:
    """What the scripted people did (for the live view and the summary)."""

    def __init__(self) -> None:
        self.citizens = 0
        self.cases = 0
        self.case_errors = 0
        self.walk_aways = 0
        self.double_presses = 0
        self.unsolicited = 0
        self.no_invite = 0
        self.reasons_chosen = 0
        self.reason_timeouts = 0
        self.last_case_error = ""
        self.queue_events = 0
        self.queue_errors = 0
        self.waiting_area = 0                   # citizens who rated in the waiting area


class Window:
    """One window: its staff, its evaluator and the queue of citizens."""

    def __init__(self, device: VirtualDevice, staff_index: int, post: Callable[[dict], Any],
                 profile: CitizenProfile, counters: Counters, rng: random.Random,
                 run_id: str, note: Callable[[str], None],
                 queue: Callable[[dict], Any] | None = None,
                 waiting: "WaitingArea | None" = None) -> None:
        self.device = device
        self.window = device.window
        self.index = staff_index
        self.staff_id = f"S{staff_index + 1:03d}"
        self.staff_name = STAFF_NAMES[staff_index % len(STAFF_NAMES)]
        self.post = post
        self.p = profile
        self.c = counters
        self.rng = rng
        self.run_id = run_id
        self.note = note
        self.n = 0
        self.serving = ""      # what the window is doing now (live view)
        self.queue = queue     # posts a queue event (None: the hall has no queue system)
        self.waiting = waiting

    async def run(self, until: float) -> None:
        """Serve citizens until `until` (host monotonic); the last one finishes rating."""
        rng = self.rng
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        while time.monotonic() < until:
            gap = rng.expovariate(1.0 / self.p.arrival_s)
            self.serving = "waiting"
            await self._idle(min(gap, max(0.0, until - time.monotonic())))
            if time.monotonic() >= until:
                break
            await self.citizen()
        self.serving = "closed"

    async def _idle(self, seconds: float) -> None:
        """Between citizens: maybe a passer-by presses a button on the idle device."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            step = min(0.5, end - time.monotonic())
            await asyncio.sleep(max(0.0, step))
            d = self.device
            if d.state == "idle" and self.rng.random() < self.p.unsolicited * step:
                self.c.unsolicited += 1
                self.note(f"{self.window}: 路人按键 unsolicited press")
                await self._rate(self.p.level(self.rng))

    async def _event(self, ticket: str, kind: str) -> None:
        if self.queue is None:
            return
        ev: dict[str, Any] = {"eventId": f"{ticket}-{kind}", "type": kind, "ticket": ticket,
                              "at": china_time(time.time())}
        if kind != "issued":
            ev["window"] = self.window
        if kind == "called":
            ev["staff"] = {"id": self.staff_id, "name": self.staff_name}
        await self.queue(ev)

    async def citizen(self) -> None:
        rng, p, d = self.rng, self.p, self.device
        self.n += 1
        self.c.citizens += 1
        self.serving = f"serving #{self.n}"
        ticket = f"T{self.run_id}{self.window}{self.n:03d}" if self.queue is not None else None
        if ticket is not None:
            for kind in ("issued", "called", "started"):
                await self._event(ticket, kind)
        await asyncio.sleep(rng.uniform(*p.service_s))
        project_no = f"DEMO-{self.run_id}-{self.window}-{self.n:04d}"
        body = case_body(project_no, self.window, self.staff_id, self.staff_name,
                         n=self.index * 100 + self.n,
                         company=rng.random() < 0.15)
        if ticket is not None:
            body["ticket"] = ticket
        finish_first = ticket is not None and rng.random() < p.finish_first
        if finish_first:
            await self._event(ticket, "finished")   # the queue's finish opens the service
        ok = await self.post(body)
        if ticket is not None and not finish_first:
            await self._event(ticket, "finished")
        if not ok:
            return
        self.c.cases += 1
        if self.waiting is not None and self.waiting.devices and rng.random() < p.waiting_area:
            # rates in the waiting area: scans the ticket or the case receipt there
            code = ticket if ticket is not None and rng.random() < 0.5 else project_no
            self.c.waiting_area += 1
            self.serving = f"#{self.n} to the waiting area"
            self.note(f"{self.window}: #{self.n} 去等候区评价 rates in the waiting area")
            self.waiting.go(code, p.level(rng), random.Random(rng.random()))
            await asyncio.sleep(rng.uniform(0.5, 1.0))
            return
        if rng.random() < p.walk_away:
            self.c.walk_aways += 1
            self.serving = "walked away"
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            return
        self.serving = f"#{self.n} looking"
        if not await self._wait(lambda: d.state == "invited", p.invite_wait_s):
            self.c.no_invite += 1
            if rng.random() < 0.5 or d.state != "idle":
                self.serving = "left (no invitation)"
                return
            self.note(f"{self.window}: 未见邀请，直接按键 pressed without an invitation")
        await asyncio.sleep(rng.uniform(*p.react_s))
        await self._rate(p.level(rng))

    async def _rate(self, level: int) -> None:
        """Press a level (maybe twice), choose a reason for a 差评, wait for 谢谢."""
        rng, p, d = self.rng, self.p, self.device
        self.serving = f"#{self.n} rates {level}"
        up = d.press(level)
        if rng.random() < p.double_press:
            self.c.double_presses += 1
            d.press(level, at=up + rng.uniform(0.08, 0.3))
        await asyncio.sleep(max(0.0, up - time.monotonic()) + 0.1)
        if level >= 4 and await self._wait(lambda: d.state == "reason", 1.5):
            if rng.random() < p.no_reason:
                self.c.reason_timeouts += 1     # looks, decides nothing: the screen times out
            else:
                await asyncio.sleep(rng.uniform(0.6, 2.0))
                if d.state == "reason" and rng.random() < p.page_turn:
                    up = d.press(5)
                    await asyncio.sleep(max(0.0, up - time.monotonic()) + rng.uniform(0.4, 1.2))
                if d.state == "reason":
                    tags = self._tags_on_page()
                    if tags:
                        up = d.press(rng.randint(1, tags))
                        self.c.reasons_chosen += 1
                        await asyncio.sleep(max(0.0, up - time.monotonic()))
        await self._wait(lambda: d.state in ("thanks", "idle", "off", "paused"), 10.0)
        self.serving = "thanks" if d.state == "thanks" else d.state

    def _tags_on_page(self) -> int:
        return tags_on_page(self.device)

    async def _wait(self, cond: Callable[[], bool], seconds: float) -> bool:
        return await _wait_until(cond, seconds)


def tags_on_page(device) -> int:
    """Reason tags on the device's reason screen now (what the citizen can press)."""
    if hasattr(device, "tags_on_page"):   # a MicroPython process reports it
        return device.tags_on_page()
    app = device.app
    if app is None or app.flow.catalogue is None:
        return 0
    left = app.flow.catalogue.count - app.flow.page * 4
    return max(0, min(4, left))


class WaitingArea:
    """The waiting-area evaluators and the citizens who come to rate there: each scans their
    ticket or receipt on a free device, rates, picks a reason for a 差评 and waits for 谢谢.
    One citizen at a device at a time; `finish()` waits for everyone who came."""

    def __init__(self, devices: list[VirtualDevice], profile: CitizenProfile,
                 note: Callable[[str], None]) -> None:
        self.devices = devices
        self.p = profile
        self.note = note
        self._locks = [asyncio.Lock() for _ in devices]
        self.tasks: list[asyncio.Task] = []
        self.serving = ""

    def go(self, code: str, level: int, rng: random.Random) -> None:
        """A citizen with `code` walks to the waiting area to rate `level`."""
        self.tasks.append(asyncio.create_task(self._citizen(code, level, rng)))

    async def finish(self) -> None:
        for t in self.tasks:
            try:
                await t
            except Exception:
                pass

    async def _citizen(self, code: str, level: int, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(1.0, 3.0))          # walks over
        i = rng.randrange(len(self.devices))
        d = self.devices[i]
        async with self._locks[i]:
            if not await _wait_until(lambda: d.state == "idle", 15.0):
                return                                      # device off the whole time: leaves
            self.serving = f"scans {code[-8:]}"
            if not d.scan(code):
                return
            if not await _wait_until(lambda: d.state == "invited", 3.0):
                return
            await asyncio.sleep(rng.uniform(*self.p.react_s))
            up = d.press(level)
            await asyncio.sleep(max(0.0, up - time.monotonic()) + 0.1)
            if level >= 4 and await _wait_until(lambda: d.state == "reason", 1.5):
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                tags = tags_on_page(d)
                if tags and d.state == "reason":
                    up = d.press(rng.randint(1, tags))
                    await asyncio.sleep(max(0.0, up - time.monotonic()))
            await _wait_until(lambda: d.state in ("thanks", "idle", "off", "paused"), 10.0)
            self.serving = "rated" if d.state == "thanks" else d.state
            await _wait_until(lambda: d.state != "thanks", 5.0)


async def _wait_until(cond: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(0.03)
    return True
