"""Virtual evaluator board: real mpremote (subprocess) and pyserial against a real pty, backed by
the real MicroPython WebAssembly runtime under Node."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from simulator.virtual_board import VirtualBoard, unavailable

ROOT = Path(__file__).resolve().parent.parent
MPREMOTE = ROOT / ".venv" / "bin" / "mpremote"

pytestmark = [
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
    pytest.mark.timeout(60),
]


def mpremote(port: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real mpremote against the board, as a technician would."""
    proc = subprocess.run([str(MPREMOTE), "connect", port, *args], capture_output=True,
                          text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"mpremote {args} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_until(port: serial.Serial, ending: bytes, limit_s: float = 10.0) -> bytes:
    """Read until `ending` (fails the test instead of hanging)."""
    data = b""
    deadline = time.monotonic() + limit_s
    while not data.endswith(ending):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {ending!r} from board; got {data!r}")
        data += port.read(1)
    return data


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory):
    with VirtualBoard(tmp_path_factory.mktemp("board-fs")) as b:
        yield b


def test_exec_prints(board: VirtualBoard) -> None:
    proc = mpremote(board.port, "exec", "print(1+1)")
    assert proc.stdout.strip() == "2"


def test_raw_paste_mode_is_what_mpremote_uses(board: VirtualBoard) -> None:
    before = board.stats["raw_paste"]
    mpremote(board.port, "exec", "print('paste')")
    assert board.stats["raw_paste"] > before


def test_fs_cp_ls_cat_and_host_folder(board: VirtualBoard, tmp_path: Path) -> None:
    src = tmp_path / "cfg.json"
    src.write_text('{"window": "A-07", "测试": true}\n', encoding="utf-8")
    mpremote(board.port, "fs", "cp", str(src), ":cfg.json")
    listing = mpremote(board.port, "fs", "ls").stdout
    assert "cfg.json" in listing and str(src.stat().st_size) in listing  # littlefs-like sizes
    assert mpremote(board.port, "fs", "cat", ":cfg.json").stdout.strip() == src.read_text().strip()
    assert (board.fs_dir / "cfg.json").read_bytes() == src.read_bytes()


def test_binary_copy_hash_matches_host(board: VirtualBoard, tmp_path: Path) -> None:
    data = bytes(range(256)) * 23 + b"\x00\x04\x03\x01"  # control bytes must survive transport
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    mpremote(board.port, "fs", "cp", str(src), ":blob.bin")
    code = ("import hashlib, binascii\nh = hashlib.sha256()\n"
            "with open('blob.bin', 'rb') as f:\n h.update(f.read())\n"
            "print(binascii.hexlify(h.digest()).decode())")
    assert mpremote(board.port, "exec", code).stdout.strip() == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(data).hexdigest() in mpremote(board.port, "fs", "sha256sum",
                                                        ":blob.bin").stdout


def test_mkdir_rm_and_errors(board: VirtualBoard, tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("X = 5\n")
    mpremote(board.port, "fs", "mkdir", ":lib")
    mpremote(board.port, "fs", "cp", str(src), ":lib/m.py")
    assert mpremote(board.port, "exec", "import m\nprint(m.X)").stdout.strip() == "5"  # /lib on path
    mpremote(board.port, "fs", "rm", ":lib/m.py")
    mpremote(board.port, "fs", "rmdir", ":lib")
    assert not (board.fs_dir / "lib").exists()
    missing = mpremote(board.port, "fs", "cat", ":nope.txt", check=False)
    assert missing.returncode != 0 and "No such file" in missing.stdout + missing.stderr
    # OSError numbers are MicroPython's, as on the board (the runtime itself leaks Emscripten's).
    code = ("import os, errno\ntry:\n os.stat('nope')\nexcept OSError as e:\n"
            " print(e.errno == errno.ENOENT)")
    assert mpremote(board.port, "exec", code).stdout.strip() == "True"


def test_exception_gives_traceback_and_nonzero_exit(board: VirtualBoard) -> None:
    proc = mpremote(board.port, "exec", "def f():\n  raise ValueError('bad value')\nf()",
                    check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback (most recent call last):" in out and "ValueError: bad value" in out


def test_eval_run_and_machine_shim(board: VirtualBoard, tmp_path: Path) -> None:
    assert mpremote(board.port, "eval", "6*7").stdout.strip() == "42"
    script = tmp_path / "s.py"
    script.write_text("import machine\nprint(len(machine.unique_id()))\n")
    assert mpremote(board.port, "run", str(script)).stdout.strip() == "6"
    uid = mpremote(board.port, "exec", "import machine; print(machine.unique_id().hex())")
    assert uid.stdout.strip() == board.uid


def test_globals_persist_until_soft_reset(board: VirtualBoard) -> None:
    mpremote(board.port, "exec", "kept = 17")
    assert mpremote(board.port, "resume", "exec", "print(kept)").stdout.strip() == "17"
    resets = board.stats["soft_reset"]
    mpremote(board.port, "soft-reset")
    assert board.stats["soft_reset"] > resets
    gone = mpremote(board.port, "resume", "exec", "print(kept)", check=False)
    assert gone.returncode != 0 and "NameError" in gone.stdout + gone.stderr


def test_plain_raw_repl_and_raw_paste_by_hand(board: VirtualBoard) -> None:
    with serial.Serial(board.port, 115200, timeout=0.2) as port:
        port.write(b"\r\x03\r\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        # Plain raw REPL: code, Ctrl-D -> OK, stdout, 0x04, stderr, 0x04, prompt.
        port.write(b"print('plain')\x04")
        assert read_until(port, b"\x04>") == b"OKplain\r\n\x04\x04>"
        port.write(b"1/0\x04")
        reply = read_until(port, b"\x04>")
        assert reply.startswith(b"OK\x04Traceback") and b"ZeroDivisionError" in reply
        # Raw-paste: header R\x01, window 128 (u16 LE), one extra window credit.
        port.write(b"\x05A\x01")
        assert port.read(5) == b"R\x01\x80\x00\x01"
        code = b"print(len('" + b"y" * 300 + b"'))"  # longer than two windows: flow control
        sent, credit = 0, 256
        while sent < len(code):
            while credit == 0:
                assert port.read(1) == b"\x01"
                credit += 128
            chunk = code[sent:sent + credit]
            port.write(chunk)
            sent += len(chunk)
            credit -= len(chunk)
        port.write(b"\x04")
        reply = read_until(port, b"\x04>")
        assert reply.replace(b"\x01", b"") == b"\x04300\r\n\x04\x04>"
        port.write(b"\r\x02")
        read_until(port, b">>> ")


def test_friendly_repl_and_interrupt(board: VirtualBoard) -> None:
    with serial.Serial(board.port, 115200, timeout=0.2) as port:
        port.write(b"\x02")  # from either REPL: banner and one prompt
        read_until(port, b">>> ")
        port.write(b"2+3\r")
        assert read_until(port, b">>> ") == b"2+3\r\n5\r\n>>> "
        port.write(b"for i in range(2):\r  print(i)\r\r")
        assert read_until(port, b">>> ").endswith(b"0\r\n1\r\n>>> ")
        port.write(b"\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"import time\nwhile True:\n  time.sleep_ms(5)\n\x04")
        assert read_until(port, b"OK") == b"OK"
        port.write(b"\x03")
        assert b"KeyboardInterrupt" in read_until(port, b"\x04>")
        port.write(b"\x02")
        read_until(port, b">>> ")


def test_garbage_and_reconnects_keep_board_usable(board: VirtualBoard) -> None:
    junk = bytes((i * 37 + 11) % 256 for i in range(2000))  # includes control characters
    with serial.Serial(board.port, 115200, timeout=0.2) as port:
        port.write(junk)
        time.sleep(0.3)
    # The peer vanished mid-conversation; the next tool must find a working board.
    for _ in range(3):
        assert mpremote(board.port, "exec", "print('ok')").stdout.strip() == "ok"


def test_long_code(board: VirtualBoard, tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text("".join(f"v{i} = {i}\n" for i in range(4000)) + "print(v3999)\n")
    assert mpremote(board.port, "run", str(script)).stdout.strip() == "3999"


def test_files_survive_restart_and_link(tmp_path: Path) -> None:
    fs_dir = tmp_path / "fs"
    link = tmp_path / "evaluator-port"
    with VirtualBoard(fs_dir, link=link) as first:
        assert link.is_symlink() and os.readlink(link) == first.port
        mpremote(str(link), "exec", "f = open('state.txt', 'w')\nf.write('kept')\nf.close()")
    assert not link.exists()
    with VirtualBoard(fs_dir) as second:
        assert mpremote(second.port, "fs", "cat", ":state.txt").stdout.strip() == "kept"
        mpremote(second.port, "reset")  # mpremote's own: exec --no-follow machine.reset()
        # Hard reset keeps files; the board comes back and answers the next tool.
        assert mpremote(second.port, "exec", "print(open('state.txt').read())").stdout.strip() \
            == "kept"
        assert second.stats["hard_reset"] == 1


def test_cli_prints_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "tty-evaluator"
    proc = subprocess.Popen([sys.executable, "-m", "simulator.virtual_board", "--fs",
                             str(tmp_path / "fs"), "--link", str(link)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(link)
        assert mpremote(str(link), "exec", "print('cli')").stdout.strip() == "cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert not link.exists()
