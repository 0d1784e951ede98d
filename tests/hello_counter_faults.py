"""Power cuts against firmware/hello_counter.py on the simulated flash of journal_faults.py.

The promise checked: every value `next()` ever returned is smaller than every value returned
after it, across clean reboots and power cuts at any write, flush, close, create or rename (with
torn writes of several lengths). Runs under CPython and the MicroPython runtime (MicroPython
subset).
"""
from firmware.hello_counter import HelloCounter
from journal_faults import FlashFS, PowerCut, check

PATH = "/hello.ctr"


class CounterOracle:
    """Every value handed out, in order; checks they only ever grow."""

    def __init__(self):
        self.top = 0          # highest value next() returned
        self.given = 0
        self.opens = 0

    def open(self, fs, block):
        c = HelloCounter(PATH, fs=fs, block=block)
        check(not c.damaged, "counter damaged by a power cut")
        self.opens += 1
        return c

    def next(self, c):
        v = c.next()
        check(v > self.top, "counter %d after %d" % (v, self.top))
        self.top = v
        self.given += 1
        return v


def scenario(fs, orc, block):
    """HELLOs across several blocks with clean reboots between."""
    c = orc.open(fs, block)
    for _ in range(block + 2):
        orc.next(c)
    c = orc.open(fs, block)          # clean reboot: the rest of the block is skipped
    orc.next(c)
    for _ in range(2 * block):
        orc.next(c)
    c = orc.open(fs, block)
    orc.next(c)


def after_cut(fs, orc, block):
    c = orc.open(fs, block)
    for _ in range(block + 1):
        orc.next(c)
    c = orc.open(fs, block)
    orc.next(c)


def _prefixes(kind):
    if kind != "write":
        return [None]
    return [lambda n: 0, lambda n: 1, lambda n: n // 2, lambda n: n - 1, lambda n: n]


def exhaustive(block=3):
    """Cut at every boundary of scenario() (each write torn five ways), reboot, check that the
    counter still only grows. Returns (boundaries, runs)."""
    fs = FlashFS()
    fs.record = True
    scenario(fs, CounterOracle(), block)
    kinds = fs.kinds
    runs = 0
    for k in range(len(kinds)):
        for prefix in _prefixes(kinds[k]):
            fs = FlashFS()
            orc = CounterOracle()
            fs.arm(k, prefix)
            try:
                scenario(fs, orc, block)
                raise AssertionError("cut at boundary %d did not happen" % k)
            except PowerCut:
                pass
            fs.reboot()
            after_cut(fs, orc, block)
            runs += 1
    return len(kinds), runs
