"""Faults the virtual hall can suffer, on a schedule (seconds after the session starts).

| kind | what happens |
|---|---|
| `power-cut` | one device loses power inside one of its next journal operations (mid-write included), stays off 2 s, boots from its journal |
| `unplug` | serial: the pty pair is closed and recreated 3 s later behind the same symlink; MQTT: the device's connection drops (WiFi blip) |
| `noise` | random bytes on the serial lines, both directions, every few seconds |
| `broker-restart` | MQTT: the broker is killed and started again on the same port (needs a broker the caller owns) |
| `clock-skew` | one device's crystal runs 3 % fast (its timers and time stamps drift until the next sync) |

The province outage is the province server's own fault (`--outage`); the demo sets it.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("power-cut", "unplug", "noise", "broker-restart", "clock-skew")
SKEW_PPM = 30000.0


@dataclass
class Fault:
    at_s: float
    kind: str
    device: int = 0          # index into the hall's devices
    length_s: float = 0.0


def parse_kinds(text: str) -> list[str]:
    """`all` or a comma list of KINDS -> list (ValueError naming a bad one)."""
    if not text:
        return []
    if text == "all":
        return list(KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"未知故障 unknown fault {k!r}; one of: all, {', '.join(KINDS)}")
    return kinds


def schedule(kinds: list[str], duration_s: float, devices: int, link: str) -> list[Fault]:
    """The plan for a session of `duration_s` with `devices` devices: each fault once, spread
    over the middle of the session so the end has time to show recovery."""
    plan: list[Fault] = []
    n = max(1, devices)
    if "power-cut" in kinds:
        plan.append(Fault(duration_s * 0.3, "power-cut", 1 % n, 2.0))
    if "unplug" in kinds:
        plan.append(Fault(duration_s * 0.5, "unplug", 2 % n, 3.0))
    if "broker-restart" in kinds and link == "mqtt":
        plan.append(Fault(duration_s * 0.65, "broker-restart", 0, 1.0))
    if "noise" in kinds and link == "serial":
        t = 2.0
        i = 0
        while t < duration_s * 0.9:
            plan.append(Fault(t, "noise", i % n))
            t += 3.0
            i += 1
    plan.sort(key=lambda f: f.at_s)
    return plan


def skewed_device(kinds: list[str], devices: int) -> int | None:
    """Index of the device whose clock runs fast, or None."""
    return (3 % max(1, devices)) if "clock-skew" in kinds else None
