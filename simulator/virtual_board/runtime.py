"""Client for one long-lived MicroPython WebAssembly interpreter running under Node.

The Node side is runtime_host.mjs (see the channel description at its top). This module only
starts it, sends code, streams the program's output to a callback and returns how the code ended.
"""
from __future__ import annotations

import base64
import collections
import json
import os
import queue
import shutil
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HOST_SCRIPT = HERE / "runtime_host.mjs"
SHIM_DIR = HERE / "shims"
RUNTIME_PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

# How long a Ctrl-C may take to stop the program before the interpreter is restarted instead.
INTERRUPT_GRACE_S = 1.5
START_TIMEOUT_S = 30.0

TIGHT_LOOP_INTERRUPT = (
    "Traceback (most recent call last):\n"
    "KeyboardInterrupt: virtual board restarted the interpreter "
    "(the program could not be interrupted; unsynced file changes lost)\n"
)


class RuntimeUnavailable(RuntimeError):
    """Node or the MicroPython WebAssembly package is missing."""


@dataclass
class ExecResult:
    """How one execution ended.

    error: MicroPython traceback text (None when the code finished or called sys.exit()).
    reset: "soft"/"hard" when the program asked for a reset via the machine shim.
    restarted: the interpreter had to be restarted (crash or uninterruptible loop).
    """

    error: str | None
    exc: str | None = None
    reset: str | None = None
    restarted: bool = False


def unavailable() -> str | None:
    """None when the runtime can be started, else why not (for error messages / pytest.skip)."""
    if shutil.which("node") is None:
        return "node is not installed / 未安装 node"
    if not RUNTIME_PACKAGE.exists():
        return "MicroPython runtime missing: run `npm ci` / 缺少 MicroPython 运行时，请运行 npm ci"
    return None


class MicroPythonRuntime:
    """One interpreter process; `execute` is called from a single thread at a time."""

    def __init__(self, fs_dir: Path, uid_hex: str, on_output: Callable[[bytes], None],
                 heap_bytes: int = 2 * 1024 * 1024) -> None:
        self.fs_dir = Path(fs_dir)
        self.uid_hex = uid_hex
        self.heap_bytes = heap_bytes
        self.on_output = on_output
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: queue.Queue[dict] = queue.Queue()
        self._cmd_w: int | None = None
        self._int_w: int | None = None
        self._busy = threading.Event()
        self._interrupt_at: float | None = None
        self._next_id = 0
        self._armed_id: int | None = None
        self._lock = threading.Lock()
        self._node_stderr: collections.deque[str] = collections.deque(maxlen=20)

    # --- process lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start Node and wait until the interpreter is ready (files loaded)."""
        reason = unavailable()
        if reason:
            raise RuntimeUnavailable(reason)
        cmd_r, cmd_w = os.pipe()
        int_r, int_w = os.pipe()
        # The interpreter polls stdin for Ctrl-C while it runs; it must never block there.
        os.set_blocking(int_r, False)
        self._events = queue.Queue()
        self._proc = subprocess.Popen(
            ["node", str(HOST_SCRIPT), "--fs", str(self.fs_dir), "--shim", str(SHIM_DIR),
             "--uid", self.uid_hex, "--heap", str(self.heap_bytes), "--cmd-fd", str(cmd_r)],
            stdin=int_r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(cmd_r,),
            cwd=ROOT)
        os.close(cmd_r)
        os.close(int_r)
        self._cmd_w, self._int_w = cmd_w, int_w
        proc = self._proc
        threading.Thread(target=self._read_events, args=(proc, self._events), daemon=True,
                         name="vboard-runtime-events").start()
        threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True,
                         name="vboard-runtime-stderr").start()
        self._wait_ready()

    def stop(self) -> None:
        """Ask Node to sync files and exit; kill it if it does not."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None and not self._busy.is_set():
                self._send({"op": "quit"})
                proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (self._cmd_w, self._int_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._cmd_w = self._int_w = None

    def restart(self) -> None:
        """Hard restart: new process, files reloaded from the host folder."""
        self._kill()
        self.start()

    def _read_events(self, proc: subprocess.Popen[bytes], events: queue.Queue[dict]) -> None:
        # Each process gets its own queue, so a killed process's late events can't leak into
        # its successor's.
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ev") == "out":
                self.on_output(base64.b64decode(ev["data"]))
            else:
                events.put(ev)
        events.put({"ev": "exit"})

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        # Node's own messages only (MicroPython's stderr arrives as "out" events); the tail is
        # kept for start-up error messages.
        assert proc.stderr is not None
        for line in proc.stderr:
            self._node_stderr.append(line.decode(errors="replace").rstrip())

    def _send(self, obj: dict) -> None:
        if self._cmd_w is None:
            raise BrokenPipeError("runtime not running")
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(self._cmd_w, data)
            data = data[n:]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                ev = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self._kill()
                raise RuntimeUnavailable("MicroPython runtime did not start / 运行时启动超时")
            if ev.get("ev") == "ready":
                return
            if ev.get("ev") == "exit":
                self._kill()
                detail = "\n".join(self._node_stderr)
                raise RuntimeUnavailable(
                    f"MicroPython runtime exited during start / 运行时启动失败:\n{detail}")

    # --- operations ----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while code is executing."""
        return self._busy.is_set()

    def arm_interrupt(self) -> None:
        """From now until the next execution ends, Ctrl-C interrupts it.

        The REPL calls this before it acknowledges the code ("OK"), because a tool may send
        Ctrl-C as soon as it sees the acknowledgement, before execution has begun."""
        with self._lock:
            if self._armed_id is None:
                self._next_id += 1
                self._armed_id = self._next_id

    def interrupt(self) -> bool:
        """Ctrl-C: raise KeyboardInterrupt in the armed execution (restart if it can't be).

        Returns False when nothing is armed: then Ctrl-C is ordinary REPL input."""
        with self._lock:
            if self._armed_id is None or self._int_w is None:
                return False
            if self._interrupt_at is None:
                self._interrupt_at = time.monotonic()
            try:
                # The id makes a late token harmless for the next execution.
                os.write(self._int_w, struct.pack("<I", self._armed_id))
            except OSError:
                pass
            return True

    def soft_reset(self) -> None:
        """Fresh interpreter in the same process; files reloaded from the host folder."""
        try:
            self._send({"op": "reset"})
            self._wait_ready()
        except (OSError, RuntimeUnavailable):
            self.restart()

    def execute(self, code: bytes, mode: str = "raw", filename: str = "<stdin>") -> ExecResult:
        """Run code ("raw": file input as in the raw REPL; "single": REPL line, echoes values;
        "file": a script such as boot.py named `filename`). Output goes to on_output."""
        self.arm_interrupt()
        with self._lock:
            cmd_id = self._armed_id
        self._busy.set()
        try:
            try:
                self._send({"op": "exec", "id": cmd_id, "mode": mode, "filename": filename,
                            "code": base64.b64encode(code).decode()})
            except OSError:
                self.restart()
                return ExecResult(error="virtual board: runtime was not running; restarted\n",
                                  exc="fatal", restarted=True)
            while True:
                try:
                    ev = self._events.get(timeout=0.05)
                except queue.Empty:
                    if (self._interrupt_at is not None
                            and time.monotonic() - self._interrupt_at > INTERRUPT_GRACE_S):
                        self.restart()
                        return ExecResult(error=TIGHT_LOOP_INTERRUPT, exc="KeyboardInterrupt",
                                          restarted=True)
                    continue
                if ev.get("ev") == "exit":
                    self.restart()
                    return ExecResult(error="virtual board: runtime exited; restarted\n",
                                      exc="fatal", restarted=True)
                if ev.get("ev") == "done" and ev.get("id") == cmd_id:
                    if ev.get("fatal"):
                        self.restart()
                        return ExecResult(error=ev.get("error"), exc="fatal", restarted=True)
                    return ExecResult(error=ev.get("error"), exc=ev.get("exc"),
                                      reset=ev.get("reset"))
        finally:
            with self._lock:
                self._armed_id = None
                self._interrupt_at = None
            self._busy.clear()
