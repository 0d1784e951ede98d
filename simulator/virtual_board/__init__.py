"""Virtual evaluator board: a pty that behaves like an ESP32 running MicroPython on USB serial.

    with VirtualBoard("/tmp/board-fs") as board:
        port = board.link_or_port   # give this to `mpremote connect <port> ...`

See README.md in this folder for what is emulated and the gaps against a real board.
"""
from .board import VirtualBoard, uid_for
from .runtime import RuntimeUnavailable, unavailable

__all__ = ["VirtualBoard", "RuntimeUnavailable", "uid_for", "unavailable"]
