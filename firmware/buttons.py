"""Button debouncing, pure: fed raw samples with timestamps, no hardware, no clock reads.

A button's stable state changes only after the raw input has held the new value for
`debounce_ms` (default 50 ms) without a change; each change of the raw value restarts that wait.
A press is reported once, when the stable state goes from released to pressed: contact bounce,
holding the button and chatter while held therefore give one press per physical press. A
release that bounces back within `debounce_ms` is not a release, so it cannot make a second press.

Buttons are numbered 1..5 and passed as a bitmask (bit 0 = button 1). Nothing here allocates
(ints only), so it can sit in the press path.
"""

DEBOUNCE_MS = 50
BUTTONS = 5


class Debouncer:
    """Debounce up to 8 buttons given as a bitmask of raw 'pressed' samples."""

    def __init__(self, debounce_ms=DEBOUNCE_MS, count=BUTTONS):
        self.debounce_ms = debounce_ms
        self.count = count
        self.stable = 0        # debounced state: bit set = held down
        self._raw = 0          # last raw sample
        self._since = [0] * count  # when each button's raw value last changed
        self.presses = 0       # presses reported so far (diagnostics)

    def update(self, raw, now_ms):
        """Feed one raw sample (bit i set = button i+1 reads pressed) taken at `now_ms`.

        Returns a bitmask of the buttons that became pressed with this sample (usually 0).
        """
        changed = raw ^ self._raw
        self._raw = raw
        since = self._since
        pressed = 0
        for i in range(self.count):
            bit = 1 << i
            if changed & bit:
                since[i] = now_ms
            elif (raw ^ self.stable) & bit and now_ms - since[i] >= self.debounce_ms:
                self.stable ^= bit
                if raw & bit:
                    pressed |= bit
                    self.presses += 1
        return pressed

    def held(self):
        """Bitmask of buttons currently held down (debounced)."""
        return self.stable


def first_button(mask):
    """Lowest button number (1..8) in a press bitmask, 0 when empty."""
    i = 1
    while mask:
        if mask & 1:
            return i
        mask >>= 1
        i += 1
    return 0
