"""Injected faults: what a flaky provincial platform does to an uploader.

Decisions come from one seeded `random.Random`, three draws per request that gets past the
outage and rate-limit gates, in arrival order, so a run with `--seed` and the same request
sequence injects the same faults.

- outage windows (seconds after server start): answer 503 with Retry-After;
- rate limit N/s (fixed one-second windows): answer 429 with Retry-After;
- fail: answer 500, store nothing;
- timeout: hold the request `hold_s` seconds (or until the client gives up), store nothing;
- drop: store the record, then close the connection without a reply.

Nothing here touches the store: a fault decides only what the client gets to see.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Draw:
    """Faults chosen for one request."""

    fail: bool
    timeout: bool
    drop: bool


class FaultPlan:
    """Fault settings plus the state (clock origin, RNG, rate window) they need."""

    def __init__(self, *, fail_rate: float = 0.0, timeout_rate: float = 0.0,
                 drop_response_rate: float = 0.0, latency_ms: int = 0,
                 outages: tuple[tuple[float, float], ...] = (), rate_limit: int = 0,
                 seed: int | None = None, hold_s: float = 30.0) -> None:
        for name, rate in (("fail_rate", fail_rate), ("timeout_rate", timeout_rate),
                           ("drop_response_rate", drop_response_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if latency_ms < 0 or rate_limit < 0 or hold_s < 0:
            raise ValueError("latency, rate limit and hold time must not be negative")
        for start, length in outages:
            if start < 0 or length <= 0:
                raise ValueError(f"outage {start}:{length}: start ≥ 0 and length > 0 seconds")
        self.fail_rate = fail_rate
        self.timeout_rate = timeout_rate
        self.drop_response_rate = drop_response_rate
        self.latency_s = latency_ms / 1000.0
        self.outages = tuple(outages)
        self.rate_limit = rate_limit
        self.hold_s = hold_s
        self._rng = random.Random(seed)
        self._origin = time.monotonic()
        self._window = -1
        self._window_count = 0

    def restart_clock(self) -> None:
        """Outage windows count from now (called when the server starts listening)."""
        self._origin = time.monotonic()

    def outage_remaining(self) -> float:
        """Seconds left in the current outage window, 0 if none is active."""
        elapsed = time.monotonic() - self._origin
        for start, length in self.outages:
            if start <= elapsed < start + length:
                return start + length - elapsed
        return 0.0

    def rate_limited(self) -> bool:
        """Count this request in the current one-second window; True if over the limit."""
        if not self.rate_limit:
            return False
        window = math.floor(time.monotonic())
        if window != self._window:
            self._window, self._window_count = window, 0
        self._window_count += 1
        return self._window_count > self.rate_limit

    def draw(self) -> Draw:
        """Decide this request's random faults (always three draws, for determinism)."""
        a, b, c = self._rng.random(), self._rng.random(), self._rng.random()
        return Draw(a < self.fail_rate, b < self.timeout_rate, c < self.drop_response_rate)


def retry_after(seconds: float) -> str:
    """Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def parse_outage(text: str) -> tuple[float, float]:
    """`START:SECONDS` -> (start, length)."""
    start, sep, length = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(start), float(length)
    except ValueError:
        raise ValueError(f"停机窗口格式应为 START:SECONDS，如 5:10 (outage must be START:SECONDS, "
                         f"e.g. 5:10), got {text!r}") from None
