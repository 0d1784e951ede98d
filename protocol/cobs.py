"""COBS framing for the serial link (Cheshire & Baker, "Consistent Overhead Byte Stuffing").

On the wire every frame is COBS(frame) followed by one 0x00 delimiter. A frame of at most
MAX_FRAME (254) bytes encodes to at most 255 bytes, so the stream decoder never needs more than
a fixed 255-byte buffer. Line noise costs at most the frame it lands in: the decoder skips to the
next 0x00 and starts again.
"""

from protocol.errors import ProtocolError, BAD_COBS, OVERSIZE

MAX_FRAME = 254
MAX_ENCODED = MAX_FRAME + 1  # one code byte per started 254-byte block


def encode(data):
    """COBS-encode `data` (no delimiter). len(result) == len(data) + 1 for len(data) <= 254."""
    n = len(data)
    out = bytearray(n + n // 254 + 1)
    code_at = 0
    code = 1
    o = 1
    i = 0
    while i < n:
        b = data[i]
        i += 1
        if b == 0:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                if i == n:      # a full block ends the data: no trailing code byte
                    return bytes(out[:o])
                code_at = o
                o += 1
                code = 1
    out[code_at] = code
    return bytes(out[:o])


def decode_into(src, n, dst):
    """Decode src[0:n] (one encoded frame, no delimiter) into `dst`; return the decoded length.

    Raises ProtocolError(BAD_COBS) for a zero byte inside the frame or a code that runs past the
    end, and ProtocolError(OVERSIZE) when the result would not fit in `dst`.
    """
    i = 0
    o = 0
    cap = len(dst)
    while i < n:
        code = src[i]
        if code == 0:
            raise ProtocolError(BAD_COBS, "zero byte inside a frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise ProtocolError(BAD_COBS, "code byte runs past the end of the frame")
        if o + (end - i) > cap:
            raise ProtocolError(OVERSIZE, "decoded frame exceeds buffer")
        while i < end:
            b = src[i]
            if b == 0:
                raise ProtocolError(BAD_COBS, "zero byte inside a frame")
            dst[o] = b
            o += 1
            i += 1
        if code != 0xFF and i < n:
            if o >= cap:
                raise ProtocolError(OVERSIZE, "decoded frame exceeds buffer")
            dst[o] = 0
            o += 1
    return o


def decode(data):
    """Decode one encoded frame (without its delimiter) and return the bytes."""
    buf = bytearray(len(data))
    n = decode_into(data, len(data), buf)
    return bytes(buf[:n])


def wire(frame):
    """The serial bytes for one frame: COBS(frame) + 0x00."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(OVERSIZE, "frame of %d bytes exceeds %d" % (len(frame), MAX_FRAME))
    return encode(frame) + b"\x00"


class StreamDecoder:
    """Turns a byte stream into frames. Memory is fixed: two buffers of MAX_ENCODED bytes.

    feed() returns a list whose items are either frame bytes or a ProtocolError describing what
    was skipped (oversize run, bad COBS). Empty frames (back-to-back delimiters) are ignored, so a
    sender may send a lone 0x00 to flush line noise before a frame.
    """

    def __init__(self):
        self._buf = bytearray(MAX_ENCODED)
        self._out = bytearray(MAX_FRAME)
        self._n = 0
        self._discarding = False
        self.skipped = 0  # bytes thrown away so far (noise, oversize runs)

    def feed(self, data):
        """Consume `data`; return the frames and errors completed by it, in order."""
        result = []
        buf = self._buf
        for b in data:
            if b == 0:
                if self._discarding:
                    self._discarding = False
                    result.append(ProtocolError(OVERSIZE, "encoded frame over %d bytes" % MAX_ENCODED))
                elif self._n:
                    try:
                        m = decode_into(buf, self._n, self._out)
                        result.append(bytes(self._out[:m]))
                    except ProtocolError as e:
                        self.skipped += self._n
                        result.append(e)
                self._n = 0
            elif self._discarding:
                self.skipped += 1
            elif self._n >= MAX_ENCODED:
                self._discarding = True
                self.skipped += self._n + 1
                self._n = 0
            else:
                buf[self._n] = b
                self._n += 1
        return result

    def reset(self):
        """Forget any partial frame (e.g. after the port was reopened)."""
        self._n = 0
        self._discarding = False
