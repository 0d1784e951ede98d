"""systemd notification protocol (sd_notify) without a dependency.

`Type=notify`: send `READY=1` once serving; with `WatchdogSec=` send `WATCHDOG=1` more often than
`WATCHDOG_USEC` — but only while the agent is healthy (the caller checks), so a hung writer gets
the service restarted.
"""
from __future__ import annotations

import os
import socket


def notify(message: str, env: dict | None = None) -> bool:
    """Send one datagram to $NOTIFY_SOCKET; False if not running under systemd."""
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace socket
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(addr)
            sock.sendall(message.encode("utf-8"))
        except OSError:
            return False
    return True


def watchdog_interval(env: dict | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if not asked for."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(0.5, int(usec) / 2_000_000)
    except ValueError:
        return None
