"""The host board for MicroPython's unix port: the real firmware as a process on a PC, with no
`machine` beyond what the port has. Used by `hcp sim --runtime micropython` and the tests.

- journal: real littlefs (`vfs.VfsLfs2`) on `journal.img` in the device folder (the "flash"),
  a file-backed block device, mounted at /journal by the firmware's own rule
  (board/journalfs.py: a blank image is formatted once, a bad one is reported, never
  reformatted). A new image starts erased (0xFF), 2 MB like the ESP32 partition.
- data link: serial = the process's stdin, which the host makes a pty master (opened O_RDWR and
  non-blocking; the agent opens the pty's slave). MQTT = the port's own sockets.
- buttons, screen, LEDs, buzzer: over the control channel, a loopback TCP connection to the
  host named by the environment variable HCP_CONTROL ("host:port"). Lines in:
      P <button> <hold_ms> <bounce>   press: `bounce` chatter samples, held for hold_ms and
                                      until the debouncer saw it, released until it saw that
      B <mask>                        set the raw buttons (e.g. 1+5 held at power-up)
      U <ms>                          the serial line is dead for ms: bytes vanish both ways
      L                               the network drops the MQTT connection
      Q                               planned stop: link closed cleanly, journal closed, exit 0
  Lines out: `H <device_id>` once, `S {json status}` when it changes, `A <rseq> <level>
  <invite_id> <reason> <flags>` for every record journalled, `R` before a restart.
  The host closing the channel ends the process (nothing outlives its simulator).
- watchdog: sim.FakeWdt (no machine.WDT here); restart(): exit code RESTART_EXIT, and the host
  starts the process again, as a reset would.

Screen, LEDs and beeps use the host board's SimFB from board/sim.py.
"""

import json
import os
import socket
import sys
import time

from firmware.board import journalfs
from firmware.board.sim import FakeWdt, SimFB

JOURNAL_IMAGE = "journal.img"
JOURNAL_MOUNT = "/journal"
JOURNAL_BLOCK_SIZE = 4096
JOURNAL_BLOCKS = 512            # 2 MB, the ESP32 journal partition (README "Partition layout")
RESTART_EXIT = 75               # exit status that asks the host for a reset
STATUS_MS = 20                  # how often the status is compared and sent when changed
STATUS_KEEPALIVE_MS = 1000
_EAGAIN = (11, 35, 115, 119)


class FileBlockDev:
    """A littlefs block device on a host file (extended block-device protocol). The file is
    created erased (all 0xFF) when missing. Writes go straight to the file (no buffering in the
    process), so killing the process loses nothing that a write returned."""

    def __init__(self, path, block_size=JOURNAL_BLOCK_SIZE, blocks=JOURNAL_BLOCKS):
        self.block_size = block_size
        self.blocks = blocks
        try:
            self.f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
            erased = b"\xff" * block_size
            for _ in range(blocks):
                f.write(erased)
            f.flush()
            self.f = f
        self._erased = b"\xff" * block_size

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.block_size + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        self.f.seek(block * self.block_size + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        if op == 6:
            self.writeblocks(arg, self._erased)
        return 0


class StdioStream:
    """The serial data link on fd 0 (a pty master the host set non-blocking): read(n) -> bytes
    or None, write(b) -> bytes taken. With no agent on the line (pty slave closed: EIO) reads
    give nothing and writes vanish, as on a pulled cable."""

    def __init__(self, board):
        self.board = board
        self.b = sys.stdin.buffer

    def _dead(self):
        bd = self.board
        if bd.line_dead and time.ticks_diff(bd.line_dead_until, time.ticks_ms()) <= 0:
            bd.line_dead = False
        return bd.line_dead

    def read(self, n):
        try:
            data = self.b.read(n) or None
        except OSError:
            return None
        return None if self._dead() else data

    def write(self, data):
        if self._dead():
            return len(data)
        try:
            n = self.b.write(data)
        except OSError as e:
            if e.args and e.args[0] in _EAGAIN:
                return 0
            return len(data)
        return n or 0


class _Press:
    def __init__(self, bit, hold_ms, bounce, now):
        self.bit = bit
        self.hold_ms = hold_ms
        self.bounce = bounce
        self.at = now
        self.down = True


class Board:
    """The unix-port board (see the module docstring)."""

    def __init__(self, control=None, journal_image=JOURNAL_IMAGE, journal_blocks=JOURNAL_BLOCKS):
        self.fb = SimFB()
        self.raw = 0
        self.led_mask = 0
        self.beeps = 0
        self.wdt = None
        self.journal_error = None
        self.journal_image = journal_image
        self.journal_blocks = journal_blocks
        self.app = None
        self.line_dead = False      # serial line cut by the host ("U"): bytes vanish both ways
        self.line_dead_until = 0
        self._mounted = False
        self._presses = []
        self._tx = bytearray()
        self._rx = bytearray()
        self._scan_rx = bytearray()   # bytes on the scanner's serial line, not yet read
        self._sent = ""
        self._sent_at = 0
        self._checked = 0
        self._reported = 0       # next_rseq whose records were reported
        self.sock = None
        if control is None:
            control = os.getenv("HCP_CONTROL")
        if control:
            self._connect(control)

    # -- control channel -----------------------------------------------------------------
    def _connect(self, control):
        host, port = control.rsplit(":", 1)
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        try:
            s.setsockopt(6, 1, 1)   # IPPROTO_TCP, TCP_NODELAY: presses must not wait
        except OSError:
            pass
        s.setblocking(False)
        self.sock = s

    def _send(self, line):
        self._tx.extend(line.encode())
        self._tx.extend(b"\n")
        self._flush()

    def _flush(self):
        s = self.sock
        while s is not None and self._tx:
            try:
                n = s.send(self._tx)
            except OSError as e:
                if e.args and e.args[0] in _EAGAIN:
                    return
                sys.exit(0)         # the host is gone: so is this device
            if not n:
                return
            self._tx = self._tx[n:]

    def _receive(self, now):
        s = self.sock
        try:
            data = s.recv(256)
        except OSError as e:
            if e.args and e.args[0] in _EAGAIN:
                return
            data = b""
        if data is None:
            return
        if not data:
            sys.exit(0)             # the host closed the channel
        self._rx.extend(data)
        while True:
            i = self._rx.find(b"\n")
            if i < 0:
                return
            line = bytes(self._rx[:i]).decode()
            self._rx = self._rx[i + 1:]
            self._command(line.split(), now)

    def _command(self, words, now):
        if not words:
            return
        if words[0] == "P":
            b = int(words[1])
            self._presses.append(_Press(1 << (b - 1), int(words[2]), int(words[3]), now))
        elif words[0] == "B":
            self.raw = int(words[1])
        elif words[0] == "U":
            self.line_dead_until = time.ticks_add(now, int(words[1]))
            self.line_dead = True
        elif words[0] == "C":
            # a ticket or receipt held under the scanner: its code arrives on the scanner's
            # serial line as a GM65-class module sends it (text + CR)
            self._scan_rx.extend(words[1].encode() + b"\r")
        elif words[0] == "L" and self.app is not None:
            self.app.uplink.link.close()      # the network dropped the connection
        elif words[0] == "Q":
            self.stop()

    def stop(self):
        """Planned stop: the link says goodbye (MQTT: offline + DISCONNECT), files closed."""
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
        sys.exit(0)

    def _play(self, now):
        """The press being played: held until hold_ms passed and the debouncer saw it, then
        released until the debouncer saw the release (a stall of this process cannot shorten
        a press in device time)."""
        if not self._presses:
            return
        p = self._presses[0]
        held = self.app.debouncer.held() if self.app is not None else -1
        age = time.ticks_diff(now, p.at)
        if p.down:
            if p.bounce > 0:
                p.bounce -= 1
                self.raw ^= p.bit
                return
            self.raw |= p.bit
            if age >= p.hold_ms and (held < 0 or held & p.bit):
                p.down = False
                p.at = now
                self.raw &= ~p.bit
        else:
            self.raw &= ~p.bit
            if age >= 30 and (held < 0 or not held & p.bit):
                self._presses.pop(0)

    def _appended(self):
        """Report records journalled since the last sample. Checked at every sample, so the
        last one is still in the flow's rec_* (the agent may ack it before the next report)."""
        j = self.app.journal
        if j is None:
            return
        while self._reported < j.next_rseq:
            r = self._reported
            self._reported += 1
            if r == j.next_rseq - 1:
                f = self.app.flow
                ref = bytes(f.ref[:f.rec_ref_len]).decode() if f.rec_ref_len else ""
                rec = (f.rec_level, f.rec_invite, f.rec_reason, f.rec_flags, ref)
            else:
                p = j.read(r)
                if p is None:
                    continue
                rec = _record(p)
            line = "A %d %d %d %d %d" % (r, rec[0], rec[1], rec[2], rec[3])
            self._send(line + " " + rec[4] if rec[4] else line)

    def _report(self, now):
        app = self.app
        j = app.journal
        f = app.flow
        st = {"state": f.state, "screen": app.display.screen, "link": app.uplink.state,
              "invite": f.invite_id if f.state == 1 else 0, "staff": f.staff_no,
              "backlog": j.unacked() if j is not None else -1,
              "next": j.next_rseq if j is not None else 0,
              "boot": j.boot_count if j is not None else 0,
              "held": app.debouncer.held(), "corrupt": app.corrupt, "refused": app.refused,
              "tags": _tags_on_page(f), "beeps": self.beeps, "leds": self.led_mask}
        text = json.dumps(st)
        if text != self._sent or time.ticks_diff(now, self._sent_at) >= STATUS_KEEPALIVE_MS:
            self._sent = text
            self._sent_at = now
            self._send("S " + text)

    def attach(self, app):
        """The app runs on this board: report its records and status over the channel."""
        self.app = app
        j = app.journal
        self._reported = j.next_rseq if j is not None else 0
        if self.sock is not None:
            self._send("H %d" % app.cfg.device_id)

    # -- the board interface (as board/esp32.py and board/sim.py) -------------------------
    def buttons(self):
        if self.sock is not None:
            now = time.ticks_ms()
            if self.app is not None:
                self._appended()
            self._receive(now)
            self._play(now)
            if self.app is not None and time.ticks_diff(now, self._checked) >= STATUS_MS:
                self._checked = now
                self._report(now)
            self._flush()
        return self.raw

    def leds(self, mask):
        self.led_mask = mask

    def beep(self, ms):
        self.beeps += 1

    def start_watchdog(self, timeout_ms):
        self.wdt = FakeWdt(timeout_ms)
        return self.wdt

    def restart(self):
        """Reset: the host sees RESTART_EXIT and starts the process again."""
        if self.sock is not None:
            self._send("R")
            self.sock.setblocking(True)
            self._flush()
        if self.app is not None and self.app.journal is not None:
            self.app.journal.close()
        sys.exit(RESTART_EXIT)

    def journal_root(self):
        """Mount journal.img at /journal (once); OSError when it does not mount."""
        if not self._mounted:
            try:
                bdev = FileBlockDev(self.journal_image, blocks=self.journal_blocks)
                journalfs.mount(bdev, JOURNAL_MOUNT)
            except OSError as e:
                self.journal_error = e
                raise        # damaged filesystem: report, never reformat
            self._mounted = True
        return JOURNAL_MOUNT

    def flash_path(self, name):
        """A file beside config.json and device.key: the process runs in the device's folder."""
        return name

    def data_stream(self, cfg=None):
        return StdioStream(self)

    def scanner(self, cfg=None):
        """The waiting-area scanner, fed by the host's "C <code>" commands."""
        from firmware.board.gm65 import Gm65
        return Gm65(_ScanLine(self))

    def net_up(self, cfg):
        return True       # the host's network is always there


class _ScanLine:
    """The scanner module's UART as Gm65 reads it: bytes the host's commands queued."""

    def __init__(self, board):
        self.board = board

    def read(self, n):
        q = self.board._scan_rx
        if not q:
            return None
        data = bytes(q[:n])
        self.board._scan_rx = q[n:]
        return data


def _record(p):
    """(level, invite_id, reason, flags, ref) of a journal payload (firmware/ratings.py)."""
    from firmware.ratings import REF_OFFSET
    from protocol.messages import unpack_record
    r = unpack_record(p, 0)
    ref = ""
    if len(p) > REF_OFFSET and p[REF_OFFSET]:
        ref = bytes(p[REF_OFFSET + 1:REF_OFFSET + 1 + p[REF_OFFSET]]).decode()
    return r.level, r.invite_id, r.reasons[0] if r.reasons else 0, r.flags, ref


def _tags_on_page(f):
    """Reason tags on the reason screen's current page (for the host's citizens)."""
    if f.catalogue is None:
        return 0
    left = f.catalogue.count - f.page * 4
    return max(0, min(4, left))
