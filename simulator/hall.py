"""A virtual hall: N evaluators running the real firmware, their windows' staff and citizens,
and the fault schedule, on one asyncio loop.

The devices are stepped from one task every few milliseconds, the way their own asyncio tasks
would run on the board (buttons 5 ms, UI 20 ms, link 10 ms). The case reports go to the agent
over real HTTP; the devices talk RL1 to the agent over real pty serial lines or a real MQTT
broker. Nothing here knows the agent's insides.
"""
from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Awaitable, Callable

import aiohttp

from .citizens import CitizenProfile, Counters, Window
from .device import VirtualDevice
from .faults import Fault

TICK_S = 0.005


class Hall:
    """Devices + windows + faults. `agent_url` is the agent's HTTP base URL."""

    def __init__(self, devices: list[VirtualDevice], agent_url: str,
                 profile: CitizenProfile | None = None, seed: int = 1,
                 faults: list[Fault] | None = None, run_id: str = "",
                 broker_restart: Callable[[float], Awaitable[None]] | None = None) -> None:
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
        self.windows = [Window(d, i, self._post, self.profile, self.counters,
                               random.Random(seed * 1000 + i), self.run_id, self.note)
                        for i, d in enumerate(devices)]
        self.started = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self._ticker: asyncio.Task | None = None

    def note(self, text: str) -> None:
        """An event for the live view."""
        self.events.append((time.monotonic(), text))

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Power the devices on and start stepping them (no citizens yet)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
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

    async def play(self, duration_s: float) -> None:
        """A hall session of `duration_s`: citizens arrive until then, faults on schedule; the
        citizens being served at the end finish rating."""
        self.started = time.monotonic()
        until = self.started + duration_s
        self._tasks = [asyncio.create_task(w.run(until), name=f"window-{w.window}")
                       for w in self.windows]
        self._tasks.append(asyncio.create_task(self._faults(), name="hall-faults"))
        await asyncio.gather(*self._tasks[:-1])
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
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
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
        assert self._session is not None
        try:
            async with self._session.post(self.agent_url + "/v1/cases", json=body) as r:
                if r.status in (200, 201):
                    return True
                text = await r.text()
                self.counters.last_case_error = f"HTTP {r.status}: {text[:200]}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.counters.last_case_error = f"{type(exc).__name__}"
        self.counters.case_errors += 1
        self.note(f"{body['window']}: 办件上报失败 case report failed: "
                  f"{self.counters.last_case_error[:80]}")
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
