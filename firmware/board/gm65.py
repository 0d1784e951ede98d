"""Driver for a UART barcode/QR scanner module of the GM65 class (GM65, GM805, MJ-2000 and the
like), as a waiting-area evaluator carries it to read the code on a queue ticket or a case
receipt (办件回执).

What the module does on its own, once set up (README.md "Scanner"): it scans whenever a code is
held in front of it (sense mode), and sends the decoded text over its UART (9600 8N1 by default)
followed by a CR. This driver only listens: it assembles bytes into codes, one per CR (or LF),
in a preallocated buffer, and says for each line whether it is a code the evaluator can record.

    n = scanner.poll()      # > 0: a code of n bytes is in scanner.code[:n]
                            #   0: nothing complete yet
                            #  -1: a line arrived that is not a usable code (too long for
                            #      RL1's 64-byte reference, or a byte outside 0x21..0x7E such
                            #      as a space or UTF-8 text): ask the citizen to scan again

`stream` is any non-blocking byte stream with read(n) -> bytes or None (board/esp32.py wraps
UART2, board/sim.py an in-memory pipe the simulator writes scans into). The module's replies to
set-up commands (binary frames starting 0x02) never end in CR, so they are dropped with the next
line's garbage check rather than mistaken for a code.
"""

MAX_CODE = 64          # = protocol.messages.MAX_REF: what one RL1 record can carry
CR = 0x0D
LF = 0x0A
READ_CHUNK = 32


class Gm65:
    """Line assembler for the scanner's serial output (see the module docstring)."""

    def __init__(self, stream, max_len=MAX_CODE):
        self.stream = stream
        self.max_len = max_len
        self.code = bytearray(max_len)      # the last complete code (valid until next poll)
        self._line = bytearray(max_len)     # the line being received
        self._n = 0
        self._bad = False                   # the line overflowed or holds a non-code byte
        self._rx = b""                      # bytes read but not yet looked at
        self._rx_i = 0
        self.codes = 0                      # counters for STATUS / technicians
        self.rejected = 0

    def poll(self):
        """Consume what arrived; return the first complete line's verdict (see above)."""
        while True:
            rx = self._rx
            i = self._rx_i
            while i < len(rx):
                b = rx[i]
                i += 1
                if b == CR or b == LF:
                    got = self._end_line()
                    if got != 0:
                        self._rx_i = i
                        return got
                    continue
                if self._n >= self.max_len or b < 0x21 or b > 0x7E:
                    self._bad = True
                    continue
                self._line[self._n] = b
                self._n += 1
            data = self.stream.read(READ_CHUNK) if self.stream is not None else None
            if not data:
                self._rx = b""
                self._rx_i = 0
                return 0
            self._rx = data
            self._rx_i = 0

    def _end_line(self):
        n, bad = self._n, self._bad
        self._n = 0
        self._bad = False
        if bad:
            self.rejected += 1
            return -1
        if n == 0:
            return 0            # CR LF, or an empty line: nothing was scanned
        for k in range(n):
            self.code[k] = self._line[k]
        self.codes += 1
        return n
