"""The host board: the same interface as board/esp32.py without hardware. Runs under CPython
(simulator) and MicroPython (tests).

- buttons: injected by the simulator or a test (set_buttons / press / release)
- display: SimFB, a 128x64 framebuffer that keeps pixels and the strings drawn, and renders
  them as ASCII art
- buzzer: counts beeps; LEDs: remembers the mask
- data link: any byte stream with non-blocking read(n)/write(b): an in-memory pipe
  (pipe_pair), or a file descriptor such as a pty (FdStream, CPython)
- watchdog: FakeWdt records feeds
- scanner (waiting-area evaluators): scan(text) types a code into the scanner's serial line,
  ending in CR, as a GM65-class module does; board/gm65.py reads it
"""

W = 128
H = 64


class SimFB:
    """A 1-bit framebuffer with the drawing calls firmware/display.py uses."""

    def __init__(self, w=W, h=H):
        self.w = w
        self.h = h
        self.buf = bytearray(w * h // 8)      # MONO_HLSB rows
        self.texts = []                       # (x, y, str) drawn since the last fill
        self.shows = 0

    def fill(self, c):
        v = 0xFF if c else 0
        for i in range(len(self.buf)):
            self.buf[i] = v
        self.texts = []

    def pixel(self, x, y, c=None):
        if not (0 <= x < self.w and 0 <= y < self.h):
            return 0
        i = (y * self.w + x) >> 3
        bit = 0x80 >> (x & 7)
        if c is None:
            return 1 if self.buf[i] & bit else 0
        if c:
            self.buf[i] |= bit
        else:
            self.buf[i] &= ~bit & 0xFF

    def fill_rect(self, x, y, w, h, c):
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.pixel(xx, yy, c)

    def text(self, s, x, y, c=1):
        # no font on the host: the string is kept and drawn into the ASCII art
        self.texts.append((x, y, s))

    def blit_mono(self, bm, w, h, x, y):
        stride = (w + 7) // 8
        for yy in range(h):
            for xx in range(w):
                if bm[yy * stride + (xx >> 3)] & (0x80 >> (xx & 7)):
                    self.pixel(x + xx, y + yy, 1)

    def show(self):
        self.shows += 1

    def text_lines(self):
        """The strings on screen, top to bottom."""
        return [t[2] for t in sorted(self.texts)]

    def ascii_art(self):
        """The screen as text: '#' for lit pixels (2x2 cells), strings overlaid at their place."""
        rows = []
        for y in range(0, self.h, 2):
            row = []
            for x in range(0, self.w, 2):
                on = self.pixel(x, y) or self.pixel(x + 1, y) or self.pixel(x, y + 1) \
                    or self.pixel(x + 1, y + 1)
                row.append("#" if on else " ")
            rows.append(row)
        for x, y, s in self.texts:
            r = rows[min(y // 2 + 2, len(rows) - 1)]
            c = x // 2
            for ch in s:
                if 0 <= c < len(r):
                    r[c] = ch
                c += 1
        return "\n".join(["".join(r).rstrip() for r in rows])


class FakeWdt:
    """Stands in for machine.WDT: counts feeds."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class PipeEnd:
    """One end of an in-memory byte pipe: non-blocking read(n) -> bytes or None, write(b)."""

    def __init__(self):
        self.inbox = bytearray()
        self.peer = None

    def read(self, n):
        if not self.inbox:
            return None
        data = bytes(self.inbox[:n])
        self.inbox = self.inbox[n:]
        return data

    def write(self, data):
        self.peer.inbox.extend(data)
        return len(data)


def pipe_pair():
    """Two connected PipeEnds (device end, agent end)."""
    a = PipeEnd()
    b = PipeEnd()
    a.peer = b
    b.peer = a
    return a, b


class FdStream:
    """A non-blocking byte stream over a file descriptor (a pty master or slave). CPython."""

    def __init__(self, fd):
        import os
        self._os = os
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, n):
        try:
            return self._os.read(self.fd, n) or None
        except BlockingIOError:
            return None

    def write(self, data):
        try:
            return self._os.write(self.fd, data)
        except BlockingIOError:
            return 0


class SimBoard:
    """Host board. `stream` is the data link's byte stream; `journal_dir` where the journal
    lives; `maintenance_held` makes buttons 1 and 5 read pressed at power-up."""

    def __init__(self, stream=None, journal_dir="journal"):
        self.stream = stream
        self.journal_dir = journal_dir
        self.fb = SimFB()
        self.raw = 0
        self.led_mask = 0
        self.beeps = 0
        self.wdt = None
        self.restarts = 0    # restart() calls; the host (simulator) performs the reboot
        self._scan_in = None  # the host's end of the scanner's serial line

    # buttons (bit i = button i+1 pressed)
    def buttons(self):
        return self.raw

    def set_buttons(self, mask):
        self.raw = mask

    def press(self, button):
        self.raw |= 1 << (button - 1)

    def release(self, button):
        self.raw &= ~(1 << (button - 1))

    # outputs
    def leds(self, mask):
        self.led_mask = mask

    def beep(self, ms):
        self.beeps += 1

    def start_watchdog(self, timeout_ms):
        self.wdt = FakeWdt(timeout_ms)
        return self.wdt

    def restart(self):
        """Ask for a reset. On the host the caller sees `restarts` grow and reboots the app."""
        self.restarts += 1

    # storage and links
    def journal_root(self):
        return self.journal_dir

    def flash_path(self, name):
        """Where a file of the flash root (beside config.json and device.key) lives: the folder
        holding the journal folder, as in a provisioned device folder (simulator/device.py)."""
        d = self.journal_dir.rstrip("/")
        i = d.rfind("/")
        return (d[:i] if i > 0 else ".") + "/" + name

    def data_stream(self, cfg=None):
        return self.stream

    def net_up(self, cfg):
        return True       # the host's network is always there

    # the ticket/receipt scanner
    def scanner(self, cfg=None):
        from firmware.board.gm65 import Gm65
        device_end, host_end = pipe_pair()
        self._scan_in = host_end
        return Gm65(device_end)

    def scan(self, code, end=b"\r"):
        """The citizen holds a ticket or receipt under the scanner: its code (str or bytes)
        arrives on the scanner's serial line. False when no scanner is attached."""
        if self._scan_in is None:
            return False
        if isinstance(code, str):
            code = code.encode()
        self._scan_in.write(bytes(code) + end)
        return True
