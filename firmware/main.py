"""Boot entry on the device (the root main.py does `from firmware.main import main; main()`).

Holding buttons 1 and 5 at power-up starts maintenance mode: the app does not run and the
watchdog is never started, so a technician has the REPL (mpremote) and the filesystem to
themselves. Otherwise: load config and key, build the app on the board and run it forever.
"""

import sys

MAINTENANCE_BUTTONS = 0x11     # buttons 1 and 5


def load_board():
    """The board module for this platform (only firmware/board touches hardware)."""
    if sys.platform in ("esp32",):
        from firmware.board import esp32
        return esp32.Board()
    if sys.platform == "linux" and sys.implementation.name == "micropython":
        from firmware.board import unix
        return unix.Board()
    from firmware.board import sim
    return sim.SimBoard()


def maintenance_requested(board):
    """True when buttons 1 and 5 are both held right now (sampled a few times: a bounce must
    not start maintenance mode by accident)."""
    import time
    for _ in range(5):
        if board.buttons() & MAINTENANCE_BUTTONS != MAINTENANCE_BUTTONS:
            return False
        if hasattr(time, "sleep_ms"):
            time.sleep_ms(10)
        else:
            time.sleep(0.01)
    return True


def show_problem(board, text):
    """Put a short ASCII message on the screen (no app running)."""
    fb = board.fb
    fb.fill(0)
    y = 0
    while text and y < 64:
        fb.text(text[:16], 0, y, 1)
        text = text[16:]
        y += 10
    fb.show()


def main(board=None):
    """Start the evaluator. Returns "maintenance" or "config-error" when the app did not
    start; otherwise runs forever."""
    if board is None:
        board = load_board()
    if maintenance_requested(board):
        show_problem(board, "MAINTENANCE     REPL ready")
        print("维护模式 maintenance mode: app and watchdog not started")
        return "maintenance"
    from firmware import config
    try:
        cfg = config.load()
        key = config.load_key()
    except config.ConfigError as e:
        show_problem(board, "CONFIG ERROR    see REPL")
        print(e)
        return "config-error"
    from firmware.app import App
    app = App(board, cfg, key)
    if hasattr(board, "attach"):
        board.attach(app)          # host boards report the app to their simulator
    import asyncio
    asyncio.run(app.run())


if __name__ == "__main__":
    main()
