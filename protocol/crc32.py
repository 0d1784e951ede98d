"""CRC-32 as in ISO-HDLC / IEEE 802.3 / zlib (poly 0x04C11DB7 reflected = 0xEDB88320,
init 0xFFFFFFFF, reflected in and out, xorout 0xFFFFFFFF). Check value of b"123456789" is
0xCBF43926.

binascii.crc32 is used when the port has it (ESP32 and unix ports do); the table version is the
fallback for ports built without MICROPY_PY_BINASCII_CRC32 and is tested against it.
"""

try:
    from binascii import crc32 as _native
except ImportError:  # pragma: no cover - depends on the MicroPython build
    _native = None

_table = None


def _make_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            if c & 1:
                c = (c >> 1) ^ 0xEDB88320
            else:
                c >>= 1
        table.append(c)
    return table


def crc32_table(data, crc=0):
    """Table-driven CRC-32 (same result as binascii.crc32). `crc` continues a running value."""
    global _table
    if _table is None:
        _table = _make_table()
    t = _table
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32(data, crc=0):
    """CRC-32 of `data` as an unsigned 32-bit int."""
    if _native is not None:
        return _native(data, crc) & 0xFFFFFFFF
    return crc32_table(data, crc)
