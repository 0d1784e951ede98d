"""The serial link: one port per device (UART / USB-CDC), COBS-framed RL1 frames.

The port is opened with pyserial (`serial.Serial(port, baud, timeout=0)`) and read from the
event loop (`loop.add_reader` on its fd), so no thread is needed and the session logic runs on
the loop like everything else. Writes go through a bounded buffer flushed with `add_writer`, so a
device that stops reading can never block the loop.

Unplug: a read error (EIO after the USB device vanished, a port that reports readiness but has no
data, any SerialException/OSError) closes the port. The path is then watched every `poll_s`
(50 ms, an os.stat): the port is opened as soon as the path names a device again, so an
evaluator whose USB port re-enumerates as it boots is answered within a poll. A port that exists
but will not open (permissions, busy) is retried every `reopen_s` (1 s), forever. After every
open a lone 0x00 is sent so line noise already in the device's receiver ends there (SPEC R-S2).

The port is opened without flushing its input (pyserial's open() would): the HELLO a device
sends as it boots may be waiting there, and throwing it away left the device unanswered until
its HELLO retry (1–2 s). Stale bytes are harmless: the COBS decoder resynchronises at the next
0x00 and RL1 rejects frames of an old session (the device then says HELLO).

An open port is also checked every `poll_s` while nothing goes wrong, because a read error is
not the only way to lose the device:

* Replaced: the configured path (a udev symlink such as /dev/serial/by-id/...) now names another
  device than the one open (compared by st_rdev and st_ino). A replugged adapter can come back
  behind the same symlink while the agent still holds the old, dead one — which may never report
  a hangup (seen with pseudo-terminals: a port opened in the moment its pair was torn down kept
  the agent deaf to the replugged device for minutes). The port is reopened at once.
* Silent: nothing at all arrived for `silence_s` (default 90 s). A device in session sends STATUS
  every minute and one without a session says HELLO at least every 30 s, so silence means the
  device is gone or the port is dead: the device is shown offline ("silent") and the port is
  reopened.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from typing import Any

import serial

from protocol import cobs
from protocol.errors import ProtocolError

from .device_session import DeviceOffline, DeviceSession
from .waits import wait_event

log = logging.getLogger("edge_agent.links.serial")

MAX_TX_BUFFER = 16 * 1024   # bytes of downlink frames waiting for the port
POLL_S = 0.05               # how often the port's path is checked (one os.stat)
# 1.5 x the firmware's STATUS interval (60 s); a device without a session says HELLO at least
# every 30 s (firmware/links/uplink.py, HELLO backoff cap). Longer silence: gone or dead port.
SILENCE_S = 90.0


class _Port(serial.Serial):
    """pyserial's port without the input flush in open() (see the module docstring)."""

    def _reset_input_buffer(self) -> None:   # pyserial 3.5 calls it from open() only
        pass


class SerialLink:
    """One device on one serial port. Also the device's gateway for INVITE/CANCEL."""

    kind = "serial"

    def __init__(self, agent: Any, device_id: int, key: bytes, port: str, baud: int = 115200,
                 reopen_s: float = 1.0, silence_s: float = SILENCE_S, poll_s: float = POLL_S,
                 **session_opts: Any) -> None:
        self.agent = agent
        self.device_id = device_id
        self.port = port
        self.baud = baud
        self.reopen_s = reopen_s
        self.silence_s = silence_s
        self.poll_s = poll_s
        self._last_rx = 0.0
        self._opened_id: tuple[int, int] | None = None
        self._opened_at = 0.0
        self.session = DeviceSession(agent, device_id, key, self._send, link="serial",
                                     **session_opts)
        self.opens = 0
        self.tx_dropped = 0
        self._ser: serial.Serial | None = None
        self._fd: int | None = None
        self._decoder = cobs.StreamDecoder()
        self._tx = bytearray()
        self._closed: asyncio.Event | None = None
        self._lost_reason: str | None = None     # why the port closed, for the console
        self._task: asyncio.Task | None = None

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the device's record window, then keep the port open (in the background)."""
        await self.session.load()
        self.session.start()
        self._task = asyncio.create_task(self._run(), name=f"serial-{self.device_id}")

    async def stop(self) -> None:
        """Close the port and stop reopening it."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._close()
        await self.session.stop()

    async def _run(self) -> None:
        last_problem = None
        lost: tuple[int, int] | None = None    # the device node just lost, if any
        while True:
            if lost is not None:
                await self._until_replaced(lost)
                lost = None
            try:
                self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                problem = _describe(exc)
                missing = getattr(exc, "errno", None) == errno.ENOENT
                if problem != last_problem:   # log each new problem once, not every second
                    log.warning("serial port unavailable", extra={
                        "deviceId": self.device_id, "port": self.port, "reason": problem,
                        "retryS": self.poll_s if missing else self.reopen_s})
                    last_problem = problem
                if missing:       # unplugged: open the moment it is back
                    await self._until_present()
                else:
                    await asyncio.sleep(self.reopen_s)
                continue
            last_problem = None
            log.info("serial port open", extra={"deviceId": self.device_id, "port": self.port,
                                                "baud": self.baud, "opens": self.opens})
            self.session.link_changed(True)
            try:
                reason = await self._watch()
            finally:
                self._close()
            self.session.link_changed(False, reason)
            if reason == "serial_silent":
                await asyncio.sleep(self.reopen_s)
            else:
                lost = self._opened_id

    async def _until_present(self) -> None:
        """Return once the port's path exists (checked every poll_s)."""
        while not os.path.exists(self.port):
            await asyncio.sleep(self.poll_s)

    async def _until_replaced(self, lost: tuple[int, int]) -> None:
        """After a loss: return at once if the port had been open for reopen_s; else once the
        path names a device again after vanishing (unplugged and back) or names another node,
        or reopen_s after the last open — a port that stays and fails right after every open is
        not reopened more than once per reopen_s."""
        deadline = self._opened_at + self.reopen_s
        vanished = False
        while time.monotonic() < deadline:
            try:
                st = os.stat(self.port)
                if vanished or (st.st_rdev, st.st_ino) != lost:
                    return
            except OSError:
                vanished = True
            await asyncio.sleep(self.poll_s)

    async def _watch(self) -> str:
        """Wait while the open port is healthy; returns why it must be closed (see the module
        docstring) as the offline reason the console shows: "serial_lost: <error>",
        "serial_replaced" or "serial_silent"."""
        closed = self._closed
        assert closed is not None
        while True:
            if await wait_event(closed, self.poll_s):
                reason, self._lost_reason = self._lost_reason, None
                return "serial_lost: " + (reason or "?")
            if self._replaced():
                log.warning("serial port replaced: reopening", extra={
                    "deviceId": self.device_id, "port": self.port})
                return "serial_replaced"
            if time.monotonic() - self._last_rx > self.silence_s:
                log.warning("serial port silent: device offline, reopening", extra={
                    "deviceId": self.device_id, "port": self.port, "silentS": self.silence_s})
                return "serial_silent"

    def _replaced(self) -> bool:
        """True when the configured path no longer names the device that is open."""
        try:
            st = os.stat(self.port)
        except OSError:
            return True        # the path is gone: the device was unplugged
        return (st.st_rdev, st.st_ino) != self._opened_id

    def _open(self) -> None:
        ser = _Port(self.port, self.baud, timeout=0, write_timeout=0)
        try:
            fd = ser.fileno()
            loop = asyncio.get_running_loop()
            self._ser, self._fd = ser, fd
            self._decoder.reset()
            self._tx = bytearray(b"\x00")   # flush line noise at the device (SPEC R-S2)
            self._closed = asyncio.Event()
            st = os.fstat(fd)
            self._opened_id = (st.st_rdev, st.st_ino)
            self._last_rx = self._opened_at = time.monotonic()
            loop.add_reader(fd, self._on_readable)
            self._flush()
        except BaseException:
            self._ser = None
            self._fd = None
            ser.close()
            raise
        self.opens += 1

    def _close(self) -> None:
        ser, fd = self._ser, self._fd
        self._ser = None
        self._fd = None
        if fd is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if ser is not None:
            try:
                ser.close()
            except Exception:
                pass
        self._tx = bytearray()

    def _fail(self, exc: BaseException) -> None:
        if self._ser is None:
            return
        self._lost_reason = _describe(exc)
        log.warning("serial port lost", extra={"deviceId": self.device_id, "port": self.port,
                                               "reason": _describe(exc)})
        loop = asyncio.get_running_loop()
        if self._fd is not None:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        if self._closed is not None:
            self._closed.set()

    # ------------------------------------------------------------------ I/O

    def _on_readable(self) -> None:
        ser = self._ser
        if ser is None:
            return
        try:
            data = ser.read(4096)
        except (serial.SerialException, OSError) as exc:
            self._fail(exc)
            return
        if not data:
            return
        self._last_rx = time.monotonic()
        now = time.time()
        for item in self._decoder.feed(data):
            if isinstance(item, ProtocolError):
                self.agent.count_rejected(item.reason)
                continue
            # the returned awaitable is tracked by the session; serial has nothing to ack
            self.session.feed(item, now)

    def _send(self, frame: bytes) -> bool:
        if self._ser is None:
            return False
        data = cobs.wire(frame)
        if len(self._tx) + len(data) > MAX_TX_BUFFER:
            # the device is not reading: drop this frame (RL1 resends what matters) and say so
            self.tx_dropped += 1
            log.warning("serial send buffer full", extra={"deviceId": self.device_id,
                                                          "dropped": self.tx_dropped})
            return False
        self._tx += data
        self._flush()
        return True

    def _flush(self) -> None:
        fd = self._fd
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        while self._tx:
            try:
                n = os.write(fd, self._tx)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                self._fail(exc)
                return
            del self._tx[:n]
        if self._tx:
            loop.add_writer(fd, self._flush)
        else:
            loop.remove_writer(fd)

    # ------------------------------------------------------------------ gateway

    async def send_invite(self, device_id: int, invite_id: int, lifetime_s: int, staff_no: str,
                          staff_name: str) -> None:
        """DeviceGateway: deliver an INVITE (waits for the device's DACK)."""
        self._check(device_id)
        await self.session.send_invite(invite_id, lifetime_s, staff_no, staff_name)

    async def send_cancel(self, device_id: int, invite_id: int) -> None:
        """DeviceGateway: deliver a CANCEL (waits for the device's DACK)."""
        self._check(device_id)
        await self.session.send_cancel(invite_id)

    def _check(self, device_id: int) -> None:
        if device_id != self.device_id:
            raise DeviceOffline(f"device {device_id} is not on serial port {self.port}")


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a port error for the logs."""
    err = getattr(exc, "errno", None)
    if isinstance(err, int) and err in errno.errorcode:
        return f"{type(exc).__name__}: {errno.errorcode[err]}"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:160]}"
