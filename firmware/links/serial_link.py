"""RL1 over a byte stream (UART1 or USB-CDC on the device, a pty or pipe in the simulator):
every frame is COBS-encoded and ends with 0x00 (SPEC §3).

The board supplies the stream: an object with non-blocking read(n) -> bytes or None and
write(data) -> number of bytes written (or None). Bytes that can't be written at once wait in
a bounded buffer; when that is full the frame is dropped (RL1 retransmits it) rather than
blocking the app.
"""

from protocol import cobs
from firmware.links.base import Link

TX_LIMIT = 2048       # bytes of unsent frames held before dropping new ones
READ_CHUNK = 256


class SerialLink(Link):
    kind = "serial"

    def __init__(self, stream):
        Link.__init__(self)
        self.stream = stream
        self.decoder = cobs.StreamDecoder()
        self._tx = bytearray()

    def connect(self):
        self.decoder.reset()
        self._tx = bytearray(b"\x00")   # a lone delimiter ends any line noise at the agent
        self.up = True
        self._flush()

    def poll(self):
        self._flush()
        out = None
        for _ in range(8):
            data = self.stream.read(READ_CHUNK)
            if not data:
                break
            items = self.decoder.feed(data)
            if items:
                if out is None:
                    out = items
                else:
                    out.extend(items)
            if len(data) < READ_CHUNK:
                break
        if out is None:
            return ()
        self.received += len(out)
        return out

    def send(self, frame):
        data = cobs.wire(frame)
        if len(self._tx) + len(data) > TX_LIMIT:
            self.dropped += 1
            self._flush()
            return
        self._tx.extend(data)
        self.sent += 1
        self._flush()

    def _flush(self):
        tx = self._tx
        while tx:
            n = self.stream.write(tx)
            if not n:
                return
            if n >= len(tx):
                self._tx = bytearray()
                return
            tx = self._tx = tx[n:]

    def close(self):
        self.up = False
        self._tx = bytearray()
