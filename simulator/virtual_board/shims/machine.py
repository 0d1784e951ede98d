# Minimal `machine` for the virtual board (simulator only: the WebAssembly runtime has no
# machine module). Only what technician tools need; anything else is absent on purpose so a
# program that needs real hardware fails here instead of pretending to work.
#   reset()       hard reset: the board reboots into the friendly REPL (boot.py runs again)
#   soft_reset()  like Ctrl-D: fresh interpreter, files kept
#   unique_id()   6 bytes, fixed per virtual board (derived from its --fs folder or --uid)
#   freq()        240 MHz, the ESP32 default
import _vboard


class VirtualBoardReset(BaseException):
    """Unwinds the running program; the board then reboots (not catchable by `except Exception`)."""


def reset():
    _vboard.request_reset("hard")
    raise VirtualBoardReset()


def soft_reset():
    _vboard.request_reset("soft")
    raise VirtualBoardReset()


def unique_id():
    uid = _vboard.uid
    return bytes(int(uid[i:i + 2], 16) for i in range(0, len(uid), 2))


def freq(hz=None):
    if hz is not None:
        raise ValueError("virtual board: frequency is fixed")
    return 240000000
