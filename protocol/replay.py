"""Anti-replay window for frame sequence numbers (one per session and direction).

Accepts a sequence number once, tolerating reordering within REPLAY_WINDOW frames (MQTT may
redeliver an older message after a newer one). The seen-bits live in a ring indexed by seq mod
REPLAY_WINDOW, in a bytearray, so MicroPython never promotes the bitmap to a big int.
"""

from protocol.errors import ProtocolError, REPLAY

REPLAY_WINDOW = 64


class ReplayWindow:
    """Tracks which sequence numbers in (highest - 64, highest] were accepted."""

    def __init__(self):
        self.highest = -1
        self._bits = bytearray(REPLAY_WINDOW // 8)

    def _get(self, seq):
        i = seq % REPLAY_WINDOW
        return self._bits[i >> 3] & (1 << (i & 7))

    def check(self, seq):
        """Raise ProtocolError(REPLAY) if `seq` was seen or is older than the window."""
        if seq > self.highest:
            return
        if self.highest - seq >= REPLAY_WINDOW or self._get(seq):
            raise ProtocolError(REPLAY, "sequence %d (highest seen %d)" % (seq, self.highest))

    def mark(self, seq):
        """Record `seq` as accepted. Call only after the frame's MAC verified."""
        if seq > self.highest:
            gap = seq - self.highest
            if gap >= REPLAY_WINDOW or self.highest < 0:
                for i in range(len(self._bits)):
                    self._bits[i] = 0
            else:
                s = self.highest + 1
                while s < seq:
                    i = s % REPLAY_WINDOW
                    self._bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
                    s += 1
                i = seq % REPLAY_WINDOW
                self._bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            self.highest = seq
        i = seq % REPLAY_WINDOW
        self._bits[i >> 3] |= 1 << (i & 7)

    def bitmap32(self):
        """Bit i set when highest-1-i was accepted (i = 0..31): the DACK bitmap."""
        m = 0
        for i in range(32):
            s = self.highest - 1 - i
            if s < 0:
                break
            if self._get(s):
                m |= 1 << i
        return m
