"""Task heartbeats and the hardware watchdog.

Each asyncio task beats its heartbeat every time round its loop. The watchdog task feeds the
hardware WDT only when every heartbeat is fresh (younger than `max_age_ms`), so a task that hangs
or dies gets the device reset even though the scheduler still runs. A maintenance boot never
creates the WDT (the board's wdt is None), so a technician at the REPL is not reset.
"""

# heartbeat slots (indices, not names: no dict lookups in the loops)
HB_BUTTONS = 0
HB_UI = 1
HB_LINK = 2
HB_COUNT = 3
NAMES = ("buttons", "ui", "link")


class Watchdog:
    """Heartbeat table + the decision to feed `wdt` (an object with feed(), or None)."""

    def __init__(self, wdt, max_age_ms=5000, count=HB_COUNT):
        self.wdt = wdt
        self.max_age_ms = max_age_ms
        self._beats = [0] * count
        self.feeds = 0
        self.starved = 0       # checks that found a stale heartbeat

    def start(self, now_ms):
        """Mark every heartbeat fresh (the tasks are starting)."""
        for i in range(len(self._beats)):
            self._beats[i] = now_ms

    def beat(self, slot, now_ms):
        self._beats[slot] = now_ms

    def stale(self, now_ms):
        """Index of the first stale heartbeat, or -1 when all are fresh."""
        for i in range(len(self._beats)):
            if now_ms - self._beats[i] > self.max_age_ms:
                return i
        return -1

    def check(self, now_ms):
        """Feed the WDT if every heartbeat is fresh. Returns True when fed."""
        if self.stale(now_ms) >= 0:
            self.starved += 1
            return False
        if self.wdt is not None:
            self.wdt.feed()
        self.feeds += 1
        return True
