"""One virtual evaluator: the repository's firmware application (`firmware.app.App`) on the
host board (`firmware/board/sim.py`), run under CPython — not a copy, not a model of it.

The device lives in its own folder, provisioned like a real one: `config.json`, `device.key`,
`catalogue.bin`, `hello.ctr` and `journal/` (real files). Power cuts are real: the journal and
the HELLO counter write through a `CutFs` (simulator/cutfs.py) that can stop the world inside a
write; the dead app object is dropped and a new one boots from the same folder, recovering the
journal and the counter as the device would.

Buttons are pressed on the SimBoard's raw inputs with contact bounce on press and release; the
app's own 50 ms debouncer turns that into presses. A press counts as *accepted* when
`journal.append()` returned (the app shows 谢谢 only then): `accepted` lists them with the host
time of the append, which is where the end-to-end latency starts.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable

from firmware import config as fwconfig
from firmware import flow as fl
from firmware.app import App, payload_size
from firmware.board.sim import SimBoard, SimFB
from firmware.clock import Clock
from firmware.hello_counter import HelloCounter
from firmware.journal import Journal

from .cutfs import CutFs, PowerCut
from .ptyport import PtyPort

BUTTON_MS = 5      # the firmware's task periods (firmware/app.py): buttons, UI, link
UI_MS = 20
LINK_MS = 10


class TrackedJournal(Journal):
    """The firmware journal, unchanged, telling the simulator when an append returned."""

    def __init__(self, *args: Any, on_append: Callable[[int], None], **kw: Any) -> None:
        self._on_append = on_append
        super().__init__(*args, **kw)

    def append(self, payload: Any = None) -> int:
        rseq = super().append(payload)
        self._on_append(rseq)
        return rseq


class Accepted:
    """A press the device showed as accepted (journal append returned); `ref` is the code a
    waiting-area device had scanned for it (None at a window)."""

    __slots__ = ("device_id", "rseq", "at", "level", "invite_id", "reason", "flags", "ref")

    def __init__(self, device_id: int, rseq: int, at: float, level: int, invite_id: int,
                 reason: int, flags: int, ref: str | None = None) -> None:
        self.device_id, self.rseq, self.at = device_id, rseq, at
        self.level, self.invite_id, self.reason, self.flags = level, invite_id, reason, flags
        self.ref = ref


def provision(root: Path, device_id: int, key: bytes, hall: str, link: str,
              mqtt: dict | None = None, flow: dict | None = None, role: str = "window"
              ) -> None:
    """Write a device folder as the provisioning tool would: config.json and device.key. The
    reason tags arrive later from the agent (CONFIG) and the firmware stores catalogue.bin.
    `role` "waiting_area" makes a waiting-area evaluator (scanner, no window)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {"device_id": device_id, "hall": hall, "link": link, "role": role,
                           "catalogue_path": str(root / "catalogue.bin"),
                           "journal": {"capacity": 50000}, "status_interval_s": 5,
                           "session_timeout_s": 30,
                           "flow": {"reason_timeout_s": 6, "thanks_s": 1, "too_fast_ms": 300,
                                    "unsolicited": True, "default_lifetime_s": 30}}
    if flow:
        cfg["flow"].update(flow)
    if mqtt:
        cfg["mqtt"] = {"host": mqtt["host"], "port": mqtt["port"], "user": str(device_id),
                       "password": mqtt.get("password", ""), "keepalive": mqtt.get("keepalive", 10)}
    (root / "config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1))
    kf = root / "device.key"
    kf.write_bytes(key)
    kf.chmod(0o600)


class VirtualDevice:
    """A provisioned device folder plus the app running on it (see the module docstring).

    `port` is the pty adapter for a serial device (None for MQTT). `skew_ppm` makes the
    device's crystal run fast (+) or slow (−): its timers and the times it stamps drift.
    `window` is None for a waiting-area device (its config says `"role": "waiting_area"`).
    """

    def __init__(self, root: str | Path, window: str | None, port: PtyPort | None = None,
                 phrases: dict | None = None, skew_ppm: float = 0.0, seed: int = 0) -> None:
        self.root = Path(root)
        self.window = window
        self.port = port
        self.phrases = phrases if phrases is not None else {}
        self.skew = 1.0 + skew_ppm / 1e6
        self.rng = random.Random(seed)
        self.cfg = fwconfig.load(str(self.root / "config.json"))
        # On the board a relative path is relative to the flash root (cwd "/"); here the folder
        # is the flash. `hcp device provision` leaves catalogue_path at its default
        # "catalogue.bin", which would otherwise land in the host process's cwd.
        cat_path = self.cfg["catalogue_path"]
        if not Path(cat_path).is_absolute():
            self.cfg.data["catalogue_path"] = str(self.root / cat_path)
        self.key = fwconfig.load_key(str(self.root / "device.key"))
        self.device_id = self.cfg.device_id
        self.waiting_area = self.cfg.waiting_area
        stream = port.stream if port is not None else None
        self.board = SimBoard(stream, str(self.root / "journal"))
        self.app: App | None = None
        self.fs: CutFs | None = None
        self.on = False
        self.boots = 0
        self.power_cuts: list[str] = []        # where each cut landed
        self.off_until = 0.0
        self.off_s = 2.0                       # how long the power stays off after a cut
        self.cut_deadline = 0.0
        self.accepted: list[Accepted] = []
        self.button_presses = 0
        self._events: list[tuple[float, int, bool]] = []   # (host time, button, down)
        self._next_ui = 0
        self._next_link = 0
        self._last_sample = 0                  # device ms of the last button sample
        self._restarts_seen = 0
        self._t0 = time.monotonic()

    # -- power ---------------------------------------------------------------------------
    def _ticks(self) -> int:
        return int((time.monotonic() - self._t0) * 1000 * self.skew)

    def boot(self) -> None:
        """Power on: a fresh app on the same folder (the journal recovers what is on disk)."""
        self.fs = CutFs(self.rng.randrange(1 << 30))
        cap = self.cfg["journal"]["capacity"]
        journal = TrackedJournal(str(self.root / "journal"), payload_size(self.cfg),
                                 capacity=cap, fs=self.fs, on_append=self._appended)
        self.board.fb = SimFB()
        if self.port is not None:
            self.port.drain_device_side()    # a booting UART starts with an empty buffer
        counter = HelloCounter(str(self.root / fwconfig.COUNTER_PATH), fs=self.fs)
        self.app = App(self.board, self.cfg, self.key, journal=journal,
                       clock=Clock(ticks=self._ticks), phrases=self.phrases, counter=counter)
        self.boots += 1
        self.on = True
        self.cut_deadline = 0.0
        self._next_ui = self._next_link = 0
        self._last_sample = 0

    def power_cut(self, within_ops: int | None = None, grace_s: float = 3.0,
                  records_only: bool | None = None) -> None:
        """Cut the power at a random point: inside one of the next journal operations
        (`within_ops`; with `records_only` only the press path's segment writes and flushes
        count, so the cut tears the next press being stored), or — if none comes within
        `grace_s` — between two steps of the app. Unset arguments are drawn at random."""
        if not self.on or self.fs is None:
            return
        if records_only is None:
            records_only = self.rng.random() < 0.5
        if within_ops is None:
            within_ops = self.rng.randint(1, 2 if records_only else 4)
        self.fs.arm(within_ops, records_only)
        self.cut_deadline = time.monotonic() + grace_s

    def _died(self, where: str) -> None:
        self.on = False
        self.off_until = time.monotonic() + self.off_s
        self.power_cuts.append(where)
        if self.fs is not None:
            self.fs.dead = True
            self.fs.close_all()
        app = self.app
        if app is not None and app.uplink.link.kind == "mqtt":
            # no DISCONNECT from a dead device: the socket just goes (the broker sends the will)
            try:
                app.uplink.link.close()
            except OSError:
                pass
        self.app = None
        self._events.clear()
        self.board.set_buttons(0)

    # -- running -------------------------------------------------------------------------
    def step(self, host_now: float) -> bool:
        """Run whatever the app's tasks have due. Returns False while the device is off
        (and boots it when its off time is over)."""
        if not self.on:
            if self.off_until and host_now >= self.off_until:
                self.off_until = 0.0
                self.boot()
            return False
        app = self.app
        assert app is not None
        try:
            now = app.clock.now()
            # On the board the button task samples every 5 ms. This host loop may have slept
            # through a whole press (a loaded CI machine), so sample as the board would have:
            # at each edge's own device time, before and after applying it.
            host_mono = time.monotonic()
            last = self._last_sample
            while self._events and self._events[0][0] <= host_now:
                at, button, down = self._events.pop(0)
                t = max(last, now - int((host_mono - at) * 1000 * self.skew))
                app.sample_buttons(t)
                (self.board.press if down else self.board.release)(button)
                app.sample_buttons(t)
                last = t
            self._last_sample = now
            app.sample_buttons(now)
            if now >= self._next_ui:
                self._next_ui = now + UI_MS
                app.ui(now)
            if now >= self._next_link:
                self._next_link = now + LINK_MS
                app.link(now)
        except PowerCut:
            self._died(self.fs.cut_op if self.fs else "?")
            return False
        if self.board.restarts != self._restarts_seen:   # the app's maintenance restart
            self._restarts_seen = self.board.restarts
            self.shutdown()
            self.boot()
            return True
        if self.cut_deadline and host_now >= self.cut_deadline:
            self._died("between steps")       # no journal operation came: cut here
            return False
        return True

    def _appended(self, rseq: int) -> None:
        f = self.app.flow if self.app is not None else None
        if f is None:
            return
        ref = bytes(f.ref[:f.rec_ref_len]).decode() if f.rec_ref_len else None
        self.accepted.append(Accepted(self.device_id, rseq, time.time(), f.rec_level,
                                      f.rec_invite, f.rec_reason, f.rec_flags, ref))

    # -- the citizen's hands -------------------------------------------------------------
    def press(self, button: int, at: float | None = None, hold_ms: float | None = None) -> float:
        """Schedule one physical press of `button` with contact bounce; returns when the
        button is released (host monotonic seconds)."""
        t = time.monotonic() if at is None else at
        hold = (hold_ms if hold_ms is not None else self.rng.uniform(90, 260)) / 1000.0
        ev = self._events
        b = t
        for _ in range(self.rng.randint(0, 3)):      # bounce on make: < 10 ms of chatter
            ev.append((b, button, True))
            b += self.rng.uniform(0.0005, 0.003)
            ev.append((b, button, False))
            b += self.rng.uniform(0.0005, 0.003)
        ev.append((b, button, True))
        up = t + hold
        for _ in range(self.rng.randint(0, 2)):      # bounce on break
            ev.append((up, button, False))
            up += self.rng.uniform(0.0005, 0.002)
            ev.append((up, button, True))
            up += self.rng.uniform(0.0005, 0.002)
        ev.append((up, button, False))
        ev.sort(key=lambda e: e[0])
        self.button_presses += 1
        return up

    def scan(self, code: str) -> bool:
        """The citizen holds a ticket or receipt under a waiting-area device's scanner."""
        if not self.on or self.app is None or not self.waiting_area:
            return False
        return self.board.scan(code)

    # -- what the citizen (and the live view) sees ---------------------------------------
    @property
    def state(self) -> str:
        if not self.on or self.app is None:
            return "off"
        return fl.STATE_NAMES[self.app.flow.state]

    @property
    def screen(self) -> str:
        return self.app.display.screen if self.on and self.app is not None else "off"

    @property
    def caption(self) -> str:
        return self.app.display.caption if self.on and self.app is not None else ""

    @property
    def invite_id(self) -> int:
        if self.on and self.app is not None and self.app.flow.state == fl.INVITED:
            return self.app.flow.invite_id
        return 0

    @property
    def staff_no(self) -> str:
        return self.app.flow.staff_no if self.invite_id else ""

    @property
    def link_state(self) -> str:
        if not self.on or self.app is None:
            return "off"
        return ("down", "hello", "up")[self.app.uplink.state]

    @property
    def backlog(self) -> int:
        if not self.on or self.app is None or self.app.journal is None:
            return -1
        return self.app.journal.unacked()

    def unacked_on_disk(self) -> int:
        """Un-acked records, also while off (a booted journal reads it from flash)."""
        if self.on and self.app is not None and self.app.journal is not None:
            return self.app.journal.unacked()
        return -1

    def shutdown(self) -> None:
        """Planned stop at the end of a run (files closed; nothing is cut)."""
        app = self.app
        if app is not None:
            link = app.uplink.link
            try:
                if hasattr(link, "shutdown"):
                    link.shutdown()
                else:
                    link.close()
            except OSError:
                pass
            if app.journal is not None:
                app.journal.close()
        self.app = None
        self.on = False


def device_class(runtime: str) -> type:
    """The virtual evaluator class for a firmware runtime: "cpython" (VirtualDevice, the app
    in this process) or "micropython" (simulator/mpy_device.py, one unix-port process each)."""
    if runtime == "micropython":
        from .mpy_device import MpyDevice
        return MpyDevice
    if runtime != "cpython":
        raise ValueError(f"unknown runtime {runtime!r}: cpython or micropython")
    return VirtualDevice
