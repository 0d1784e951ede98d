"""The protocol's primitives and window logic under the real MicroPython runtime."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SIM_FILES = {"/lib/" + n: (HERE / n).read_text() for n in ("arq_sim.py", "fw_agent.py")}


def test_primitives_micropython(micropython):
    out = micropython.run(
        "from protocol.crc32 import crc32, crc32_table\n"
        "from protocol import auth, cobs\n"
        "assert crc32(b'123456789') == 0xCBF43926\n"
        "assert crc32_table(b'123456789') == 0xCBF43926\n"
        "from protocol.crc32 import crc32_into\n"
        "import gc\n"
        "out = bytearray(8)\n"
        "for n in (0, 1, 9, 40):\n"
        "    data = bytes(range(n)) + b'123456789'\n"
        "    crc32_into(data, len(data), out, 2)\n"
        "    assert int.from_bytes(out[2:6], 'little') == crc32(data), n\n"
        "def alloc(k):\n"   # locals only: a new global name would grow the module dict
        "    gc.disable()\n"
        "    a = gc.mem_alloc()\n"
        "    for _ in range(k):\n"
        "        crc32_into(data, 49, out, 2)\n"
        "    a = gc.mem_alloc() - a\n"
        "    gc.enable()\n"
        "    return a\n"
        "alloc(1)\n"
        "assert alloc(100) == 0\n"
        "h = auth.hmac_sha256(b'Jefe', b'what do ya want for nothing?').hex()\n"
        "assert h == '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843', h\n"
        "d = cobs.StreamDecoder()\n"
        "items = d.feed(b'\\x05\\xff\\x13\\x00' + cobs.wire(b'\\x01\\x00\\x02') + b'\\x07' * 600 + b'\\x00')\n"
        "assert items[1] == b'\\x01\\x00\\x02', items\n"
        "assert [getattr(i, 'reason', None) for i in items] == ['bad_cobs', None, 'oversize'], items\n"
        "print('primitives ok')\n")
    assert "primitives ok" in out


def test_windows_micropython(micropython):
    out = micropython.run(
        "import arq_sim\n"
        "for seed in (1, 2, 3, 4, 5):\n"
        "    arq_sim.run(seed)\n"
        "arq_sim.run(100, loss=0.5, dup=0.3, reorder=0.6, corrupt=0.2, reconnect_ms=1500)\n"
        "print('windows ok')\n",
        files=SIM_FILES)
    assert "windows ok" in out
