"""What the agent does with HELLOs beyond the protocol's own checks (SPEC §5.3): a per-device
token bucket, burst detection, and the counts that make bursts and replays visible.

Order for an incoming HELLO (device_session.py): the protocol refuses a bad seq, a bad MAC and a
counter at or below the floor (a replay) before anything else; only a HELLO that passed all of
that reaches `admit()`, and of several HELLOs waiting at once (the broker or the line held
them during an outage) only the newest. So a replay flood can never empty the bucket and lock
the real device out; the bucket bounds how often a *genuine* device (boot loop, flapping link, a
HELLO recorded and withheld) makes the agent start a session. Over the limit the HELLO is counted and not
answered: the device's backoff (2 s, doubling to 30 s) brings it back once a token is there.

Counts go to the database in batches (`take_pending`) so a flood of refusals costs a handful of
writes, not one per frame.
"""
from __future__ import annotations

import collections
import time
from typing import Callable

# (burst, seconds per token): a device says HELLO after boot and after each reconnect or
# session timeout, and repeats an unanswered one after 2, 4, 8 … 30 s. Ten in a row, then one
# every 6 s, never holds back a device that only loses its link, even a slow agent whose answers
# come after the device's next try; it does hold back a boot loop (and counts it).
HELLO_RATE = (10, 6.0)
# (HELLOs, seconds): ten sessions in ten minutes mean a boot loop or a flapping link; ten
# replayed HELLOs in ten minutes mean someone is sending recorded frames. Alert once a period.
HELLO_BURST = (10, 600.0)


class TokenBucket:
    """`capacity` tokens, one more every `refill_s` seconds; `take()` spends one if there is."""

    def __init__(self, capacity: int, refill_s: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        if capacity < 1 or refill_s <= 0:
            raise ValueError("a HELLO rate needs capacity >= 1 and refill_s > 0")
        self.capacity, self.refill_s, self._clock = capacity, refill_s, clock
        self.tokens = float(capacity)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(float(self.capacity), self.tokens + (now - self._at) / self.refill_s)
        self._at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Burst:
    """True once when `count` events fall within `period` seconds; then quiet for a period."""

    def __init__(self, count: int, period: float, clock: Callable[[], float]) -> None:
        self.count, self.period, self._clock = count, period, clock
        self._times: collections.deque[float] = collections.deque()
        self._quiet_until = 0.0

    def event(self) -> bool:
        now = self._clock()
        times = self._times
        times.append(now)
        while times and times[0] < now - self.period:
            times.popleft()
        if len(times) < self.count or now < self._quiet_until:
            return False
        self._quiet_until = now + self.period
        return True

    @property
    def recent(self) -> int:
        return len(self._times)


class HelloGuard:
    """HELLO policy and counters for one device."""

    def __init__(self, rate: tuple[int, float] = HELLO_RATE,
                 burst: tuple[int, float] = HELLO_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket = TokenBucket(rate[0], rate[1], clock)
        self.burst_period = burst[1]
        self._sessions = _Burst(burst[0], burst[1], clock)
        self._replays = _Burst(burst[0], burst[1], clock)
        # since the agent started: accepted (answered), replayed, limited, bursts (alerts due)
        self.counts = {"accepted": 0, "replayed": 0, "limited": 0, "bursts": 0}
        self._pending = {"replays": 0, "limited": 0, "bursts": 0}

    def admit(self) -> bool:
        """A HELLO that passed MAC and freshness: answer it (True) or not (over the limit)."""
        if self.bucket.take():
            self.counts["accepted"] += 1
            return True
        self.counts["limited"] += 1
        self._pending["limited"] += 1
        return False

    def session_burst(self) -> bool:
        """Note a new session; True once per period when they come in a burst."""
        if not self._sessions.event():
            return False
        self.counts["bursts"] += 1
        self._pending["bursts"] += 1
        return True

    def replayed(self) -> bool:
        """Note a HELLO refused as a replay; True once per period when they come in a burst."""
        self.counts["replayed"] += 1
        self._pending["replays"] += 1
        return self._replays.event()

    @property
    def recent_sessions(self) -> int:
        return self._sessions.recent

    @property
    def recent_replays(self) -> int:
        return self._replays.recent

    def take_pending(self) -> dict[str, int]:
        """Counts not yet written to the database (and forget them)."""
        out = self._pending
        self._pending = {"replays": 0, "limited": 0, "bursts": 0}
        return out

    def give_back(self, pending: dict[str, int]) -> None:
        """A write of `take_pending()` failed: keep the counts for the next one."""
        for k, v in pending.items():
            self._pending[k] += v
