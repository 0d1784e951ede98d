"""MicroPython's REPL protocol as seen on a board's serial port (shared/runtime/pyexec.c).

Friendly REPL (`>>> `, line editing, continuation lines, Ctrl-E paste mode), raw REPL (Ctrl-A,
`OK` + stdout + 0x04 + traceback + 0x04 + `>`), raw-paste mode (`\\x05A\\x01` with flow control)
and soft reset (Ctrl-D). Bytes come in one at a time through `feed`; replies go to `write`.
Code runs in a MicroPythonRuntime.
"""
from __future__ import annotations

import struct
from typing import Callable, Protocol

from .runtime import ExecResult

BANNER = (b"MicroPython v1.29.0 on 2025-01-01; virtual evaluator board (WebAssembly runtime) "
          b"with ESP32\r\nType \"help()\" for more information.\r\n")
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
HARD_RESET = b"\r\nrst:0xc (SW_CPU_RESET) [virtual board hard reset]\r\n"
MAIN_NOT_RUN = "virtual board: main.py present but not run / 虚拟板不运行 main.py\r\n".encode()
# MICROPY_REPL_STDIN_BUFFER_MAX is 256 on ports; raw-paste advertises half as the window.
RAW_PASTE_WINDOW = 128

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5

FRIENDLY, RAW, RAW_PASTE, PASTE = "friendly", "raw", "raw-paste", "paste"

_COMPOUND = (b"if", b"while", b"for", b"try", b"with", b"def", b"class", b"async")


class Runtime(Protocol):
    """What the REPL needs from the interpreter (MicroPythonRuntime provides it)."""

    def execute(self, code: bytes, mode: str = "raw", filename: str = "<stdin>") -> ExecResult: ...

    def arm_interrupt(self) -> None: ...

    def soft_reset(self) -> None: ...

    def restart(self) -> None: ...


def cooked(data: bytes) -> bytes:
    """Text output as a board's UART sends it: every \\n becomes \\r\\n."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def continue_with_input(text: bytes) -> bool:
    """Port of mp_repl_continue_with_input (py/repl.c): does this input need more lines?"""
    if not text:
        return False
    first = text.split(b"\n", 1)[0]
    compound = first.startswith(b"@") or any(
        first.startswith(k) and (len(first) == len(k) or not (chr(first[len(k)]).isalnum()
                                                               or first[len(k)] == 0x5F))
        for k in _COMPOUND)
    paren = brack = brace = 0
    quote = None  # b"'", b'"', b"'''", b'"""'
    i = 0
    while i < len(text):
        c = text[i:i + 1]
        if quote is None:
            if c in (b"'", b'"'):
                if text[i:i + 3] == c * 3:
                    quote = c * 3
                    i += 3
                    continue
                quote = c
            elif c == b"#":
                while i < len(text) and text[i:i + 1] != b"\n":
                    i += 1
                continue
            elif c == b"(":
                paren += 1
            elif c == b")":
                paren -= 1
            elif c == b"[":
                brack += 1
            elif c == b"]":
                brack -= 1
            elif c == b"{":
                brace += 1
            elif c == b"}":
                brace -= 1
        else:
            if c == b"\\":
                i += 2
                continue
            if len(quote) == 3 and text[i:i + 3] == quote:
                quote = None
                i += 3
                continue
            if len(quote) == 1 and c == quote:
                quote = None
        i += 1
    if quote in (b"'''", b'"""'):
        return True
    if (paren > 0 or brack > 0 or brace > 0) and quote is None:
        return True
    if text.endswith(b"\\"):
        return True
    return compound and not text.endswith(b"\n")


class Repl:
    """The board's REPL state machine; feed() is called from one thread, in byte order."""

    def __init__(self, runtime: Runtime, write: Callable[[bytes], None],
                 read_file: Callable[[str], bytes | None]) -> None:
        self.runtime = runtime
        self.write = write
        self.read_file = read_file
        self.mode = FRIENDLY
        self.line = bytearray()
        self.pending = b""  # friendly REPL: lines entered so far of a multi-line statement
        self.paste_remaining = 0
        self.escape = 0  # friendly REPL: inside a terminal escape sequence (arrow keys etc.)
        # Counters for observers/tests: which protocol paths were used.
        self.stats = {"raw_paste": 0, "raw_exec": 0, "friendly_exec": 0, "soft_reset": 0,
                      "hard_reset": 0, "interrupts": 0}

    # --- start-up ------------------------------------------------------------------------------
    def power_on(self) -> None:
        """What a board does after power-on: run boot.py, then show the friendly REPL."""
        self.mode = FRIENDLY
        self._run_boot_scripts()
        self.write(BANNER + b">>> ")

    # --- input ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Process bytes received on the serial port."""
        for c in data:
            if self.mode == RAW:
                self._raw(c)
            elif self.mode == RAW_PASTE:
                self._raw_paste(c)
            elif self.mode == PASTE:
                self._paste(c)
            else:
                self._friendly(c)

    # --- raw REPL ------------------------------------------------------------------------------
    def _enter_raw(self) -> None:
        self.mode = RAW
        self.line = bytearray()
        self.write(RAW_BANNER + b">")

    def _raw(self, c: int) -> None:
        if c == CTRL_A:
            if len(self.line) == 2 and self.line[0] == CTRL_E:
                if self.line[1] == ord("A"):
                    self.stats["raw_paste"] += 1
                    self.mode = RAW_PASTE
                    self.line = bytearray()
                    self.paste_remaining = RAW_PASTE_WINDOW
                    # Window size, then 0x01: two windows are free at the start.
                    self.write(b"R\x01" + struct.pack("<H", RAW_PASTE_WINDOW) + b"\x01")
                    return
                self.write(b"R\x00")  # unknown raw-REPL extension
                self._enter_raw()
                return
            self.write(b"\r\n")
            self._enter_raw()
        elif c == CTRL_B:
            self.write(b"\r\n")
            self.line = bytearray()
            self.mode = FRIENDLY
            self.write(BANNER + b">>> ")
        elif c == CTRL_C:
            self.line = bytearray()
        elif c == CTRL_D:
            if self.line:
                self.runtime.arm_interrupt()
            self.write(b"OK")
            if not self.line:
                self.write(b"\r\n")
                self._soft_reset()
                return
            code, self.line = bytes(self.line), bytearray()
            self.stats["raw_exec"] += 1
            if self._run_marked(code):
                self.write(b">")
        else:
            self.line.append(c)

    def _raw_paste(self, c: int) -> None:
        if c in (CTRL_C, CTRL_D):
            if c == CTRL_D:
                self.runtime.arm_interrupt()
            self.write(b"\x04")  # end of data acknowledged
            code, self.line = bytes(self.line), bytearray()
            self.mode = RAW
            if c == CTRL_C:
                self.stats["interrupts"] += 1
                self.write(b"\x04KeyboardInterrupt: \r\n\x04>")
                return
            if self._run_marked(code):
                self.write(b">")
            return
        self.line.append(c)
        self.paste_remaining -= 1
        if self.paste_remaining == 0:
            self.paste_remaining = RAW_PASTE_WINDOW
            self.write(b"\x01")  # another window is free

    def _run_marked(self, code: bytes) -> bool:
        """Execute for the raw REPL: stdout, 0x04, traceback, 0x04. False if the board reset."""
        result = self.runtime.execute(code, "raw")
        if self._after_reset_request(result, marked=True):
            return False
        self.write(b"\x04")
        if result.error:
            self.write(cooked(result.error.encode()))
        self.write(b"\x04")
        return True

    # --- friendly REPL -------------------------------------------------------------------------
    def _prompt(self) -> None:
        self.write(b"... " if self.pending else b">>> ")

    def _friendly(self, c: int) -> None:
        if self.escape:
            # Swallow ESC [ ... final-byte; arrow keys/history are not emulated.
            if self.escape == 1:
                self.escape = 2 if c in (0x5B, 0x4F) else 0
            elif 0x40 <= c <= 0x7E:
                self.escape = 0
            return
        empty = not self.line and not self.pending
        if c == 0x1B:
            self.escape = 1
        elif c == CTRL_A and empty:
            self.write(b"\r\n")
            self._enter_raw()
        elif c == CTRL_B and empty:
            self.write(b"\r\n" + BANNER + b">>> ")
        elif c == CTRL_C:
            self.line = bytearray()
            self.pending = b""
            self.write(b"\r\n>>> ")
        elif c == CTRL_D and empty:
            self.write(b"\r\n")
            self._soft_reset()
        elif c == CTRL_E and empty:
            self.mode = PASTE
            self.line = bytearray()
            self.write(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        elif c in (0x08, 0x7F):
            if self.line:
                # Remove one whole UTF-8 character.
                while self.line and (self.line[-1] & 0xC0) == 0x80:
                    self.line.pop()
                if self.line:
                    self.line.pop()
                self.write(b"\x08 \x08")
        elif c in (0x0D, 0x0A):
            self.write(b"\r\n")
            text = self.pending + b"\n" + bytes(self.line) if self.pending else bytes(self.line)
            self.line = bytearray()
            if continue_with_input(text):
                self.pending = text
                self.write(b"... ")
                return
            self.pending = b""
            if text.strip():
                self.stats["friendly_exec"] += 1
                result = self.runtime.execute(text, "single")
                if self._after_reset_request(result):
                    return
                if result.error:
                    self.write(cooked(result.error.encode()))
            self.write(b">>> ")
        elif c >= 0x20:
            self.line.append(c)
            self.write(bytes([c]))

    def _paste(self, c: int) -> None:
        if c == CTRL_C:
            self.mode = FRIENDLY
            self.line = bytearray()
            self.write(b"\r\n>>> ")
        elif c == CTRL_D:
            self.mode = FRIENDLY
            code, self.line = bytes(self.line), bytearray()
            self.write(b"\r\n")
            self.stats["friendly_exec"] += 1
            result = self.runtime.execute(code, "raw")
            if self._after_reset_request(result):
                return
            if result.error:
                self.write(cooked(result.error.encode()))
            self.write(b">>> ")
        elif c == 0x0D:
            self.line.append(0x0A)
            self.write(b"\r\n=== ")
        elif c != 0x0A:
            self.line.append(c)
            self.write(bytes([c]))

    # --- resets --------------------------------------------------------------------------------
    def _after_reset_request(self, result: ExecResult, marked: bool = False) -> bool:
        """Handle machine.reset()/soft_reset() from the program. True if the board reset.

        A hard reset cuts the raw-REPL reply short (no 0x04 markers), as the chip reboots; a
        soft reset ends the reply normally first (SystemExit path in pyexec.c)."""
        if result.reset == "hard":
            self._hard_reset()
            return True
        if result.reset == "soft":
            self.write(b"\x04\x04" if marked else b"\r\n")
            self._soft_reset()
            return True
        return False

    def _soft_reset(self) -> None:
        """Ctrl-D: fresh interpreter, files kept; the REPL mode is kept as on a board."""
        self.stats["soft_reset"] += 1
        self.write(SOFT_REBOOT)
        self.runtime.soft_reset()
        self._run_boot_scripts()
        self.line = bytearray()
        self.pending = b""
        if self.mode == RAW:
            self.write(RAW_BANNER + b">")
        else:
            self.mode = FRIENDLY
            self.write(BANNER + b">>> ")

    def _hard_reset(self) -> None:
        """machine.reset(): new interpreter, board comes back in the friendly REPL."""
        self.stats["hard_reset"] += 1
        self.write(HARD_RESET)
        self.runtime.restart()
        self.power_on()

    def _run_boot_scripts(self) -> None:
        # A board always runs boot.py; main.py only in the friendly REPL. The virtual board never
        # runs main.py (the application would run forever and needs hardware): it says so.
        # A reset requested from boot.py itself is ignored (it would loop).
        boot = self.read_file("boot.py")
        if boot is not None:
            result = self.runtime.execute(boot, "file", filename="boot.py")
            if result.error:
                self.write(cooked(result.error.encode()))
        if self.mode != RAW and self.read_file("main.py") is not None:
            self.write(MAIN_NOT_RUN)
