"""Heap of the device's object model under MicroPython's unix port with the heap set like an
ESP32 without PSRAM (`micropython -X heapsize=100K`), as `make bench` prints it
(`python -m tests.bench mpy-heap`).

The device image is what `hcp firmware build` puts on the board: firmware/ and protocol/ as
.mpy files, whose bytecode is loaded into the heap when imported (nothing is frozen). The journal
is real littlefs on journal.img (the unix board's FileBlockDev). Two runs, each in its own process
with the test agent (tests/fw_agent.py) in the same heap, on a simulated clock:

- 1,000 rated invitations acked by the agent (tests/fw_memrun.py): code, app objects, peak
  growth, and the press path's allocations (debounce -> flow -> journal append, collector off);
- a long outage: a 50,000-record backlog (the journal's capacity), presses until the device
  pauses, then the agent comes back and all of it is drained through RL1 (tests/fw_backlog.py).

"device heap" = code + app objects + peak growth, the agent's share excluded. Printed: whether
the runs complete at HEAP, the smallest heap the 1,000-press run completes in (bisection, 4 KB
steps, agent included), and the resident code when the same .mpy files are imported from a
ROMFS image (`mpremote romfs build`; on the device bytecode then executes in place from flash).
The unix port is 64-bit: objects take more bytes than on the ESP32's 32-bit build (the
WebAssembly runtime, 32-bit, measured app objects ≈ 7.5 KB where this port says ≈ 9.4 KB).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
HEAP = 100 * 1024          # an ESP32 without PSRAM gives MicroPython about 100 KB of heap
BIG = 1024 * 1024

MOUNT = """
from firmware.board.unix import FileBlockDev
from firmware.board import journalfs
journalfs.mount(FileBlockDev('/journal.img', blocks=%d), '/journal')
"""
PRESSES = MOUNT + """
import asyncio, fw_memrun
r = asyncio.run(fw_memrun.run('/journal', %d))
print('HEAP', ' '.join('%%s=%%d' %% (k, r[k]) for k in sorted(r)))
"""
BACKLOG = MOUNT + """
import fw_backlog
r = fw_backlog.run('/journal', %d)
print('HEAP', ' '.join('%%s=%%d' %% (k, r[k]) for k in sorted(r)))
"""
CODE = """
import gc, sys, vfs
MODS = ('firmware.app', 'firmware.links.serial_link', 'firmware.links.mqtt_link')
if %r:
    data = open('/image.romfs', 'rb').read()
    vfs.mount(vfs.VfsRom(data), '/rom')
    sys.path.insert(0, '/rom')
    sys.path.remove('/lib')
gc.collect()
a = gc.mem_alloc()
for m in MODS:
    __import__(m)
gc.collect()
print('CODE', gc.mem_alloc() - a)
"""


def _build(tmp: Path) -> Path:
    from tools.firmware_build import build
    out = tmp / "image"
    build(out, with_phrases=False)
    return out


def image_files(tmp: Path) -> dict[str, bytes]:
    """The device image (hcp firmware build, .mpy) and the test helpers, as /lib files."""
    out = _build(tmp)
    files = {"/lib/" + p.relative_to(out).as_posix(): p.read_bytes()
             for p in out.rglob("*") if p.is_file() and p.suffix in (".mpy", ".py")}
    for n in ("fw_memrun.py", "fw_backlog.py", "fw_agent.py"):
        files["/lib/" + n] = (TESTS / n).read_bytes()
    return files


def romfs_image(tmp: Path) -> bytes:
    """The same .mpy files as a ROMFS image (mpremote romfs build, the pinned mpremote)."""
    src = tmp / "romsrc"
    for p in _build(tmp).rglob("*.mpy"):
        rel = p.relative_to(tmp / "image")
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(p.read_bytes())
    out = tmp / "image.romfs"
    subprocess.run([str(Path(sys.executable).parent / "mpremote"), "romfs", "--no-mpy", "-o",
                    str(out), "build", str(src)], check=True, capture_output=True)
    return out.read_bytes()


def run(code: str, heap: int, files: dict[str, bytes]) -> dict[str, int] | None:
    """One run at `heap` bytes; its HEAP figures, or None when it ran out of memory."""
    from tests import mpy_unix
    try:
        out = mpy_unix.run(code, packages=(), files=files, heap=heap, timeout=600)
    except mpy_unix.MicroPythonError as e:
        if "MemoryError" in str(e):
            return None
        raise
    line = out.split("HEAP ", 1)[1].splitlines()[0]
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split())}


def smallest_heap(code: str, files: dict[str, bytes], hi: int) -> int:
    """The smallest heap (4 KB steps, at most `hi`) the run completes in."""
    lo = 32 * 1024
    while hi - lo > 4096:
        mid = (lo + hi) // 2 // 4096 * 4096
        if run(code, mid, files) is None:
            lo = mid
        else:
            hi = mid
    return hi


def code_size(files: dict[str, bytes], romfs: bytes | None) -> int:
    from tests import mpy_unix
    f = dict(files)
    if romfs is not None:
        f["/image.romfs"] = romfs
    out = mpy_unix.run(CODE % (romfs is not None,), packages=(), files=f, heap=BIG)
    return int(out.split("CODE ", 1)[1].split()[0])


def report(heap: int = HEAP, presses: int = 1000, backlog: int = 50000) -> str:
    from tests import mpy_unix
    reason = mpy_unix.available()
    if reason:
        return f"Device heap, MicroPython unix port: skipped ({reason})"

    def kb(n: int) -> str:
        return f"{n / 1024:.1f} KB"
    lines = [f"Device heap, MicroPython unix port (64-bit), device image (.mpy), journal on "
             f"littlefs; target: the app in a {kb(heap)} heap"]
    with tempfile.TemporaryDirectory(prefix="hcp-heap-") as t:
        tmp = Path(t)
        files = image_files(tmp)
        romfs = romfs_image(tmp)
        c_files, c_rom = code_size(files, None), code_size(files, romfs)
        lines.append(f"  resident code: {kb(c_files)} imported from .mpy files (today's image), "
                     f"{kb(c_rom)} from a ROMFS image ({kb(len(romfs))}, in flash on the "
                     f"device)")
        for name, code in ((f"{presses:,} presses", PRESSES % (64, presses)),
                           (f"backlog of {backlog:,}", BACKLOG % (512, backlog))):
            at = run(code, heap, files)
            r = at or run(code, BIG, files)
            dev = r["device_heap"] + c_files
            line = (f"  {name}: app objects {kb(r['app_objects'])}, peak growth "
                    f"{kb(r['growth'])}; device heap with code {kb(dev)} "
                    f"({dev * 100 // heap} % of {kb(heap)}), with ROMFS code "
                    f"{kb(r['device_heap'] + c_rom)} ({(r['device_heap'] + c_rom) * 100 // heap} %)"
                    f"; at -X heapsize={heap // 1024}K: "
                    f"{'completes' if at is not None else 'MemoryError'}")
            if "press_alloc_avg" in r:
                line += (f"\n    press path: {r['press_alloc_avg']} B per press on average, "
                         f"{r['presses_allocating']} of {r['presses']} presses allocate (a new "
                         f"segment file, max {r['press_alloc_max']} B); smallest heap for the "
                         f"whole run (agent included): {kb(smallest_heap(code, files, BIG))}")
            else:
                line += (f"\n    backlog {r['backlog']:,} un-acked, paused when full: "
                         f"{bool(r['paused_when_full'])}, all {r['stored_once']:,} drained once")
            lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
