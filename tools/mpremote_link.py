"""Talk to a device's USB serial REPL through the pinned `mpremote` (run as a subprocess, exactly
as a technician would), with failures turned into messages that say what to check.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


class DeviceError(Exception):
    """A device step failed; the message says what to check (cable, port, firmware, key)."""


def mpremote_path() -> str:
    """The pinned mpremote next to the running python, else one on PATH."""
    exe = Path(sys.executable).parent / "mpremote"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpremote")
    if found:
        return found
    raise DeviceError(f"找不到 mpremote / mpremote not found next to {sys.executable}: install "
                      f"it with `pip install mpremote==1.29.0` (make setup does this)")


def check_port(port: str) -> None:
    """Fail early and clearly when the serial port is missing or not ours to open."""
    if not os.path.exists(port):
        raise DeviceError(f"串口不存在 serial port {port} does not exist: check the USB cable "
                          f"(a data cable, not charge-only), that the board is powered, and the "
                          f"port name (ls /dev/ttyUSB* /dev/ttyACM*)")
    if not os.access(port, os.R_OK | os.W_OK):
        raise DeviceError(f"无权限打开串口 no permission to open {port}: add your user to the "
                          f"`dialout` group (sudo usermod -aG dialout $USER, then log in again) "
                          f"or run as root")


class Mpremote:
    """`mpremote connect PORT ...` for one device."""

    def __init__(self, port: str, timeout_s: float = 60.0) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.exe = mpremote_path()

    def run(self, *args: str, what: str) -> str:
        """Run one mpremote command chain; returns stdout. `what` names the step for errors."""
        check_port(self.port)
        try:
            proc = subprocess.run([self.exe, "connect", self.port, *args], capture_output=True,
                                  text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{what}: 设备无响应 no answer from {self.port} within "
                              f"{self.timeout_s:.0f} s: the app may be holding the REPL — press the "
                              f"board's reset button and try again; check it runs MicroPython") from None
        if proc.returncode != 0:
            raise DeviceError(f"{what}: {self._explain(proc.stdout + proc.stderr)}")
        return proc.stdout

    def _explain(self, out: str) -> str:
        text = out.strip().splitlines()[-1] if out.strip() else "mpremote failed"
        low = out.lower()
        if "failed to access" in low or "could not open" in low:
            return (f"无法打开串口 cannot open {self.port}: is another program using it (a serial "
                    f"console, the agent, another mpremote)? check the cable and port. ({text})")
        if "raw repl" in low or "could not enter" in low:
            return (f"无法进入 REPL could not enter the REPL on {self.port}: is this a MicroPython "
                    f"board (wrong firmware)? press reset and retry. ({text})")
        if "no such file" in low or "enoent" in low:
            return f"设备上缺少文件或目录 a file or folder is missing on the device ({text})"
        if "enospc" in low or "no space" in low:
            return f"设备存储已满 the device's flash is full: erase it and retry ({text})"
        return text

    def exec(self, code: str, what: str) -> str:
        """Run Python source on the device; returns its output."""
        return self.run("exec", code, what=what)
