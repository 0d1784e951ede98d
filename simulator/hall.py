"""A virtual hall: N evaluators running the real firmware, their windows' staff and citizens,
the queue system, the waiting area's evaluators, and the fault schedule, on one asyncio loop.

The devices are stepped from one task every few milliseconds, the way their own asyncio tasks
would run on the board (buttons 5 ms, UI 20 ms, link 10 ms). The case reports go to the agent
over real HTTP, signed as the hall's business system and queue system
(edge_agent/intake_client.py); the devices talk RL1 to the agent over real pty serial lines or a
real MQTT broker. Nothing here knows the agent's insides.
"""
from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Awaitable, Callable

import aiohttp

from edge_agent.intake_client import IntakeClient

from .citizens import CitizenProfile, Counters, WaitingArea, Window
from .device import VirtualDevice
from .faults import Fault

TICK_S = 0.005


class Hall:
    """Devices + windows + faults. `agent_url` is the agent's HTTP base URL; `business` and
    `queue` are the (client id, key) the business system and the queue system sign with (no
    `queue`: the hall runs without a queue system)."""

    def __init__(self, devices: list[VirtualDevice], agent_url: str,
                 profile: CitizenProfile | None = None, seed: int = 1,
                 faults: list[Fault] | None = None, run_id: str = "",
                 broker_restart: Callable[[float], Awaitable[None]] | None = None,
                 business: tuple[str, bytes] | None = None,
                 queue: tuple[str, bytes] | None = None) -> None:
        self.devices = devices
        self.agent_url = agent_url.rstrip("/")
        self.profile = profile or CitizenProfile()
        self.rng = random.Random(seed)
        self.faults = list(faults or [])
        self.run_id = run_id or time.strftime("%H%M%S")
        self.broker_restart = broker_restart
        self.counters = Counters()
        self.events: collections.deque[tuple[float, str]] = collections.deque(maxlen=200)
        self.fault_log: list[str] = []
        if business is None:
            raise ValueError("the hall needs its business system's intake client (id, key)")
        self._business, self._queue_client = business, queue
        self.waiting = [d for d in devices if d.waiting_area]
        self.waiting_area = WaitingArea(self.waiting, self.profile, self.note)
        self.windows = [Window(d, i, self._post, self.profile, self.counters,
                               random.Random(seed * 1000 + i), self.run_id, self.note,
                               queue=self._event if queue is not None else None,
                               waiting=self.waiting_area)
                        for i, d in enumerate(d for d in devices if not d.waiting_area)]
        self.started = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._biz: IntakeClient | None = None
        self._queue: IntakeClient | None = None
        self._tasks: list[asyncio.Task] = []
        self._ticker: asyncio.Task | None = None

    def note(self, text: str) -> None:
        """An event for the live view."""
        self.events.append((time.monotonic(), text))

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Power the devices on and start stepping them (no citizens yet)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._biz = IntakeClient(self.agent_url, *self._business, session=self._session)
        if self._queue_client is not None:
            self._queue = IntakeClient(self.agent_url, *self._queue_client, session=self._session)
        for d in self.devices:
            if d.port is not None:
                d.port.plug()
            d.boot()
        self._ticker = asyncio.create_task(self._tick(), name="hall-devices")

    async def wait_online(self, timeout: float = 20.0) -> bool:
        """Until every device has an RL1 session with the agent."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(d.link_state == "up" for d in self.devices):
                return True
            await asyncio.sleep(0.05)
        return False

    async def play(self, duration_s: float, with_faults: bool = True) -> None:
        """A hall session of `duration_s`: citizens arrive until then, faults on schedule (unless
        not `with_faults`); the citizens being served at the end finish rating."""
        self.started = time.monotonic()
        until = self.started + duration_s
        self._tasks = [asyncio.create_task(w.run(until), name=f"window-{w.window}")
                       for w in self.windows]
        self._tasks.append(asyncio.create_task(
            self._faults() if with_faults else asyncio.sleep(0), name="hall-faults"))
        await asyncio.gather(*self._tasks[:-1])
        await self.waiting_area.finish()
        await self._finish_faults()

    async def drain(self, timeout: float) -> bool:
        """Wait until every device is on, connected, and holds no un-acked record."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(d.on and d.link_state == "up" and d.backlog == 0 for d in self.devices):
                return True
            await asyncio.sleep(0.1)
        return False

    async def close(self) -> None:
        """Stop everything this hall started (safe to call more than once)."""
        waiting = list(self.waiting_area.tasks)
        self.waiting_area.tasks = []
        for t in self._tasks + waiting:
            t.cancel()
        for t in self._tasks + waiting:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except (asyncio.CancelledError, Exception):
                pass
            self._ticker = None
        for d in self.devices:
            d.shutdown()
            if d.port is not None:
                d.port.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the device clock ----------------------------------------------------------------
    async def _tick(self) -> None:
        while True:
            now = time.monotonic()
            for d in self.devices:
                was_on = d.on
                d.step(now)
                if was_on and not d.on:
                    self.note(f"{d.window}: 断电 power cut ({d.power_cuts[-1]})")
                elif not was_on and d.on:
                    self.note(f"{d.window}: 重启 rebooted from its journal (boot {d.boots})")
            await asyncio.sleep(TICK_S)

    # -- staff ---------------------------------------------------------------------------
    async def _post(self, body: dict) -> bool:
        """POST /v1/cases (the window's business system reporting a finished case)."""
        assert self._biz is not None
        try:
            status, reply = await self._biz.post_case(body)
            if status in (200, 201):
                return True
            self.counters.last_case_error = f"HTTP {status}: {str(reply)[:200]}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.counters.last_case_error = f"{type(exc).__name__}"
        self.counters.case_errors += 1
        self.note(f"{body['window']}: 办件上报失败 case report failed: "
                  f"{self.counters.last_case_error[:80]}")
        return False

    async def _event(self, event: dict) -> bool:
        """POST /v1/queue/events (the queue system: ticket issued, called, started, finished)."""
        assert self._queue is not None
        try:
            status, reply = await self._queue.post_event(event)
            if status in (200, 201):
                self.counters.queue_events += 1
                return True
            error = f"HTTP {status}: {str(reply)[:120]}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = type(exc).__name__
        self.counters.queue_errors += 1
        self.note(f"排队事件上报失败 queue event failed: {error[:80]}")
        return False

    # -- faults --------------------------------------------------------------------------
    async def _faults(self) -> None:
        self._pending: list[asyncio.Task] = []
        for f in self.faults:
            delay = self.started + f.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._apply(f)

    async def _finish_faults(self) -> None:
        for t in getattr(self, "_pending", []):
            try:
                await t
            except Exception:
                pass

    async def _apply(self, f: Fault) -> None:
        d = self.devices[f.device % len(self.devices)]
        if f.kind == "power-cut":
            d.off_s = f.length_s or 2.0
            d.power_cut()
            self.fault_log.append(f"power-cut {d.window}")
            self.note(f"{d.window}: 故障 fault: power cut armed (mid-write or between steps)")
        elif f.kind == "unplug":
            self.fault_log.append(f"unplug {d.window}")
            if hasattr(d, "link_fault"):         # a MicroPython process (simulator/mpy_device.py)
                self.note(f"{d.window}: 故障 fault: {d.link_fault(f.length_s or 3.0)}")
            elif d.port is not None:
                d.port.unplug()
                self.note(f"{d.window}: 故障 fault: serial cable unplugged")

                async def replug() -> None:
                    await asyncio.sleep(f.length_s or 3.0)
                    d.port.plug()
                    self.note(f"{d.window}: 串口重新插入 serial cable plugged back")
                self._pending.append(asyncio.create_task(replug()))
            elif d.app is not None:
                d.app.uplink.link.close()        # WiFi blip: the MQTT connection drops
                self.note(f"{d.window}: 故障 fault: network connection dropped")
        elif f.kind == "noise":
            if d.port is not None:
                data = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(4, 24)))
                d.port.noise(data, to_agent=self.rng.random() < 0.5)
        elif f.kind == "broker-restart" and self.broker_restart is not None:
            self.fault_log.append("broker-restart")
            self.note("故障 fault: MQTT broker restart")
            self._pending.append(asyncio.create_task(self.broker_restart(f.length_s or 1.0)))

    # -- numbers -------------------------------------------------------------------------
    def accepted(self) -> list:
        out = []
        for d in self.devices:
            out.extend(d.accepted)
        return out

    def button_presses(self) -> int:
        return sum(d.button_presses for d in self.devices)
