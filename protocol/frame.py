"""RL1 frame layout: header, payload, optional MAC, CRC-32. See SPEC.md §Frame.

    offset  size  field
    0       1     version (1)
    1       1     flags
    2       1     type
    3       1     payload length N
    4       4     device id (u32, big-endian)
    8       4     frame sequence (u32, big-endian)
    12      N     payload
    12+N    8     MAC (only when FLAG_SIGNED): HMAC-SHA256(key, bytes 0..12+N)[:8]
    end-4   4     CRC-32 (big-endian) over every byte before it

The CRC is the last four bytes in every version of RL1, so a receiver can tell line damage
(bad_crc) from a peer speaking another version (bad_version).
"""

import struct

from protocol import VERSION
from protocol.auth import MAC_LEN, Hmac, equal
from protocol.cobs import MAX_FRAME
from protocol.crc32 import crc32
from protocol.errors import (ProtocolError, TRUNCATED, OVERSIZE, BAD_CRC, BAD_VERSION, BAD_FLAGS,
                             BAD_LENGTH, BAD_MAC, UNSIGNED)

HEADER = ">BBBBII"
HEADER_LEN = 12
CRC_LEN = 4
MIN_FRAME = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = MAX_FRAME - HEADER_LEN - MAC_LEN - CRC_LEN  # 230 for signed frames

FLAG_DOWN = 0x01       # 0 = device -> agent (uplink), 1 = agent -> device (downlink)
FLAG_SIGNED = 0x02     # an 8-byte MAC follows the payload
FLAG_MORE = 0x04       # sender has more records queued (a hint, never required)
FLAG_RETX = 0x08       # the frame carries retransmitted content (a hint for counters)
FLAGS_RESERVED = 0xF0  # must be zero; a frame with any of these set is rejected


class Frame:
    """A parsed frame. `payload` is bytes; `signed` is the header+payload the MAC covers."""

    def __init__(self, flags, type, device_id, seq, payload, mac, signed):
        self.version = VERSION
        self.flags = flags
        self.type = type
        self.device_id = device_id
        self.seq = seq
        self.payload = payload
        self.mac = mac
        self.signed = signed

    @property
    def downlink(self):
        return bool(self.flags & FLAG_DOWN)


def build(type, flags, device_id, seq, payload, mac_key=None):
    """Assemble a frame. `mac_key` is an auth.Hmac; with it the frame is signed.

    Raises ProtocolError(OVERSIZE) when the result would exceed MAX_FRAME.
    """
    plen = len(payload)
    signed = mac_key is not None
    if signed:
        flags |= FLAG_SIGNED
    else:
        flags &= ~FLAG_SIGNED
    total = HEADER_LEN + plen + (MAC_LEN if signed else 0) + CRC_LEN
    if plen > 255 or total > MAX_FRAME:
        raise ProtocolError(OVERSIZE, "payload of %d bytes makes a %d-byte frame (max %d)"
                            % (plen, total, MAX_FRAME))
    out = bytearray(total)
    struct.pack_into(HEADER, out, 0, VERSION, flags, type, plen, device_id, seq)
    out[HEADER_LEN:HEADER_LEN + plen] = payload
    end = HEADER_LEN + plen
    if signed:
        out[end:end + MAC_LEN] = mac_key.digest(memoryview(out)[:end])[:MAC_LEN]
        end += MAC_LEN
    struct.pack_into(">I", out, end, crc32(memoryview(out)[:end]))
    return bytes(out)


def parse(data):
    """Check the frame's structure and CRC and split it. Does NOT check the MAC (see verify).

    Checks run in the order SPEC.md §Accept rules gives; the first failure is raised.
    """
    n = len(data)
    if n < MIN_FRAME:
        raise ProtocolError(TRUNCATED, "%d bytes, a frame has at least %d" % (n, MIN_FRAME))
    if n > MAX_FRAME:
        raise ProtocolError(OVERSIZE, "%d bytes, limit %d" % (n, MAX_FRAME))
    mv = memoryview(data)
    (want,) = struct.unpack_from(">I", data, n - CRC_LEN)
    if crc32(mv[:n - CRC_LEN]) != want:
        raise ProtocolError(BAD_CRC)
    version, flags, type, plen, device_id, seq = struct.unpack_from(HEADER, data, 0)
    if version != VERSION:
        raise ProtocolError(BAD_VERSION, "version %d, this receiver speaks %d" % (version, VERSION))
    if flags & FLAGS_RESERVED:
        raise ProtocolError(BAD_FLAGS, "reserved flag bits 0x%02x set" % (flags & FLAGS_RESERVED))
    signed = flags & FLAG_SIGNED
    expect = HEADER_LEN + plen + (MAC_LEN if signed else 0) + CRC_LEN
    if n < expect:
        raise ProtocolError(TRUNCATED, "length field says %d bytes, got %d" % (expect, n))
    if n > expect:
        raise ProtocolError(BAD_LENGTH, "%d bytes after the frame the length field describes"
                            % (n - expect))
    end = HEADER_LEN + plen
    payload = bytes(mv[HEADER_LEN:end])
    mac = bytes(mv[end:end + MAC_LEN]) if signed else None
    return Frame(flags, type, device_id, seq, payload, mac, mv[:end])


def verify(frame, mac_key):
    """Raise ProtocolError(UNSIGNED or BAD_MAC) unless the frame's MAC matches `mac_key`."""
    if frame.mac is None:
        raise ProtocolError(UNSIGNED)
    if not equal(mac_key.digest(frame.signed)[:MAC_LEN], frame.mac):
        raise ProtocolError(BAD_MAC)
