"""`python -m simulator.virtual_board --fs DIR [--link PATH]`: run one virtual board until Ctrl-C."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from .board import VirtualBoard
from .runtime import RuntimeUnavailable


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the serial port path, then serves until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator.virtual_board",
        description="虚拟评价器（ESP32 + MicroPython 串口）/ Virtual evaluator board on a pty")
    parser.add_argument("--fs", required=True,
                        help="host folder holding the board's flash / 保存板上文件的本地目录")
    parser.add_argument("--link", help="stable symlink to the pty / 指向串口的固定符号链接路径")
    parser.add_argument("--uid", help="machine.unique_id() as 12 hex digits / 12 位十六进制设备号")
    parser.add_argument("--heap", type=int, default=2 * 1024 * 1024,
                        help="MicroPython heap bytes (default 2 MiB) / 堆大小（字节）")
    args = parser.parse_args(argv)
    try:
        board = VirtualBoard(args.fs, link=args.link, uid=args.uid, heap_bytes=args.heap)
        port = board.start()
    except (RuntimeUnavailable, ValueError, FileExistsError) as e:
        print(f"错误 / error: {e}", file=sys.stderr)
        return 2
    print(port, flush=True)
    print(f"虚拟评价器已就绪 / virtual board ready: mpremote connect {port} ...  "
          "(Ctrl-C 退出 / to stop)", file=sys.stderr, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
