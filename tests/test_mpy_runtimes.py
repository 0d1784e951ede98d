"""Why the suite runs two MicroPython builds: the WebAssembly runtime (npm, Node) is 32-bit like
the ESP32, the unix port (PyPI) is 64-bit. An int past 2**30 is a heap object on a 32-bit build
and a small int on a 64-bit one, and every object is bigger on 64-bit; so the press path's
"allocates nothing" and the journal's RAM figures are checked on the 32-bit build
(test_firmware_micropython.py, test_journal.py), while littlefs, sockets, ptys and processes
need the unix port (test_firmware_littlefs.py, test_firmware_unix_links.py). This test pins the
facts that decision rests on: should a 32-bit unix build come along, it fails, and the
WebAssembly runtime (and Node) can go."""
from __future__ import annotations

CODE = """
import gc, sys
def alloc(v, shift):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(10):
        v << shift
    a = gc.mem_alloc() - a
    gc.enable()
    return a
alloc(1, 3)
print('WORD', 32 if sys.maxsize == 2 ** 31 - 1 else 64, alloc(1, 31) - alloc(1, 3))
"""


def _word(out: str) -> tuple[int, int]:
    bits, alloc = out.split("WORD ", 1)[1].split()[:2]
    return int(bits), int(alloc)


def test_webassembly_is_32_bit_and_unix_port_64_bit(micropython, micropython_unix):
    bits, alloc = _word(micropython.run(CODE))
    assert bits == 32 and alloc > 0            # 2**31 is a heap int, as on the ESP32
    bits, alloc = _word(micropython_unix.run(CODE))
    assert bits == 64 and alloc == 0           # a small int here: an allocation test would pass
