"""Time on the evaluator: a monotonic millisecond count for timers, and wall-clock time that
comes only from the agent (HELLO_ACK and TIME), never from the device's own RTC guess.

- `now()` is a monotonic ms count. MicroPython's time.ticks_ms() wraps (2**30 ms on ESP32, about
  12.4 days); Clock extends it with ticks_diff so timers never see a wrap.
- Until the first sync the device has no wall time: records carry seconds since boot and
  REC_CLOCK_UNSYNCED. Once synced, `wall_at_boot()` turns those boot-relative seconds into wall
  time (REC_TIME_CORRECTED) for records of the current boot.
- MicroPython on ESP32 counts time.time() from 2000-01-01, not 1970: `EPOCH_OFFSET` normalises
  (unix = device_time + EPOCH_OFFSET). Wall time here is always Unix seconds UTC.
"""

import time

UNIX_2000 = 946684800

try:
    EPOCH_OFFSET = UNIX_2000 if time.gmtime(0)[0] == 2000 else 0
except Exception:  # pragma: no cover - a port without gmtime
    EPOCH_OFFSET = 0

# Wall times before this are not believable (an agent with an unset clock): refused.
MIN_VALID_UNIX = 1704067200    # 2024-01-01


def unix_from_device(t):
    """Unix seconds from the port's time.time() value (2000 epoch on ESP32)."""
    return int(t) + EPOCH_OFFSET


def device_from_unix(t):
    """The port's time.time() value for Unix seconds `t` (for setting the RTC)."""
    return int(t) - EPOCH_OFFSET


def _default_ticks():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms, time.ticks_diff
    t0 = time.monotonic()

    def ticks():
        return int((time.monotonic() - t0) * 1000)

    def diff(a, b):
        return a - b
    return ticks, diff


# The port's millisecond ticks and their wrap-safe difference, for code that needs a plain
# timer without a Clock (the MQTT client's keepalive and retry timers).
ticks_ms, ticks_diff = _default_ticks()


class Clock:
    """Monotonic ms + agent-given wall time. `ticks`/`diff` default to time.ticks_ms/ticks_diff
    (or time.monotonic under CPython); tests and the simulator pass their own."""

    def __init__(self, ticks=None, diff=None):
        if ticks is None:
            ticks, d = _default_ticks()
            if diff is None:
                diff = d
        if diff is None:
            def diff(a, b):
                return a - b
        self._ticks = ticks
        self._diff = diff
        self._last = ticks()
        self._mono = 0
        self.boot_ms = 0           # monotonic ms at boot (construction)
        self.synced = False
        self._wall_ms = 0          # wall ms at monotonic 0
        self._hi = 0
        self._lo = 0
        self._frac = 0
        self.hi = 0                # result of split(): high and low 16 bits of a u32 time
        self.lo = 0
        self.syncs = 0

    def now(self):
        """Monotonic milliseconds since this Clock was made (never wraps, never goes back)."""
        t = self._ticks()
        d = self._diff(t, self._last)
        if d > 0:
            self._mono += d
            self._last = t
        return self._mono

    def set_wall(self, unix_s, now_ms):
        """Wall time from the agent (Unix seconds at `now_ms`). Returns True when this is the
        first sync (the device's status changes). Implausible times are ignored."""
        if unix_s < MIN_VALID_UNIX:
            return False
        self._wall_ms = unix_s * 1000 - now_ms
        # the same as (hi, lo) 16-bit halves of the wall seconds at monotonic 0 plus a ms
        # fraction, so the press path can compute wall time with small ints only (Unix
        # seconds exceed MicroPython's 31-bit small ints: every operation would allocate)
        base_s = self._wall_ms // 1000
        self._frac = self._wall_ms - base_s * 1000
        self._hi = base_s >> 16
        self._lo = base_s & 0xFFFF
        first = not self.synced
        self.synced = True
        self.syncs += 1
        return first

    def wall(self, now_ms):
        """Unix seconds at `now_ms` (only meaningful when synced)."""
        return (self._wall_ms + now_ms) // 1000

    def split_wall(self, now_ms):
        """Set self.hi/self.lo to the 16-bit halves of wall(now_ms) without allocating
        (valid while now_ms is a small int, i.e. the first 12 days of uptime)."""
        lo = self._lo + (now_ms + self._frac) // 1000
        self.hi = (self._hi + (lo >> 16)) & 0xFFFF
        self.lo = lo & 0xFFFF

    def split_uptime(self, now_ms):
        """Set self.hi/self.lo to the halves of uptime_s(now_ms)."""
        s = (now_ms - self.boot_ms) // 1000
        self.hi = (s >> 16) & 0xFFFF
        self.lo = s & 0xFFFF

    def uptime_s(self, now_ms):
        """Seconds since boot at `now_ms`."""
        return (now_ms - self.boot_ms) // 1000

    def wall_at_boot(self):
        """Unix seconds at boot: wall time of a boot-relative second count is this + it."""
        return (self._wall_ms + self.boot_ms) // 1000
