"""CRC-32 as in ISO-HDLC / IEEE 802.3 / zlib (poly 0x04C11DB7 reflected = 0xEDB88320,
init 0xFFFFFFFF, reflected in and out, xorout 0xFFFFFFFF). Check value of b"123456789" is
0xCBF43926.

binascii.crc32 is used when the port has it (ESP32 and unix ports do); the table version is the
fallback for ports built without MICROPY_PY_BINASCII_CRC32 and is tested against it.

`crc32_into` is for code that must not allocate (the device's press path): a CRC-32 is 32
bits, and MicroPython boxes any int of 2**30 or more on the heap, so binascii.crc32's result
allocates three times in four. It keeps the register as two 16-bit halves (always small ints)
with two 256-entry half tables (1 KB, built once) and writes the result into a buffer.
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


_lo_t = None   # low / high 16 bits of _table, as array('H')
_hi_t = None


def prepare_into():
    """Build the half tables now (allocates ~1 KB once) so crc32_into never allocates."""
    global _lo_t, _hi_t
    if _lo_t is None:
        from array import array
        lo_t = array("H", range(256))
        hi_t = array("H", range(256))
        for i in range(256):   # _make_table in halves: no long-int garbage at boot
            lo, hi = i, 0
            for _ in range(8):
                odd = lo & 1
                lo = (lo >> 1) | ((hi & 1) << 15)
                hi >>= 1
                if odd:
                    lo ^= 0x8320
                    hi ^= 0xEDB8
            lo_t[i] = lo
            hi_t[i] = hi
        _lo_t, _hi_t = lo_t, hi_t


def crc32_into(data, n, out, offset):
    """CRC-32 of data[0:n], stored little-endian in out[offset:offset + 4], without any heap
    allocation once prepare_into() ran. Same value as crc32(data[:n])."""
    if _lo_t is None:
        prepare_into()
    lo_t = _lo_t
    hi_t = _hi_t
    lo = 0xFFFF
    hi = 0xFFFF
    for i in range(n):
        k = (lo ^ data[i]) & 0xFF
        lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ lo_t[k]
        hi = (hi >> 8) ^ hi_t[k]
    lo ^= 0xFFFF
    hi ^= 0xFFFF
    out[offset] = lo & 0xFF
    out[offset + 1] = lo >> 8
    out[offset + 2] = hi & 0xFF
    out[offset + 3] = hi >> 8


def crc32(data, crc=0):
    """CRC-32 of `data` as an unsigned 32-bit int."""
    if _native is not None:
        return _native(data, crc) & 0xFFFFFFFF
    return crc32_table(data, crc)
