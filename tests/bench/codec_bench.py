"""Per-frame encode/decode cost of RL1. MicroPython subset: runs under CPython and under the
MicroPython runtime. The baseline, measured in the same run, is one HMAC-SHA256 over the same
bytes with the runtime's own hashlib: the floor any authenticated frame pays."""

import hashlib
import time

from protocol import cobs, messages as m
from protocol.session import Session, DEVICE, AGENT

try:
    _now = time.perf_counter_ns

    def _us(t0):
        return (time.perf_counter_ns() - t0) / 1000
except AttributeError:          # MicroPython
    _now = time.ticks_us

    def _us(t0):
        return time.ticks_diff(time.ticks_us(), t0)


def _time(fn, n):
    fn()
    t0 = _now()
    for _ in range(n):
        fn()
    return _us(t0) / n


def run(n=300):
    """Returns [(case, us per op, ratio to baseline)], baseline first."""
    key = bytes(range(32))
    dev = Session(1001, key, DEVICE)
    ag = Session(1001, key, AGENT)
    dev.adopt(b"n" * 8, b"a" * 8)
    ag.adopt(b"n" * 8, b"a" * 8)
    one = [m.Record(1, 1795000000, 5001, 1, 4, 0, (201, 207))]
    ten = [m.Record(i, 1795000000 + i, 5001 + i, 1, 1 + i % 5, 0, ()) for i in range(10)]
    frames = {}

    def enc1():
        frames[1] = cobs.wire(dev.seal(m.RECORDS, {"low": 1, "records": one})[1])

    def enc10():
        frames[10] = cobs.wire(dev.seal(m.RECORDS, {"low": 1, "records": ten})[1])

    enc1()
    enc10()
    dec = cobs.StreamDecoder()

    def dec_n(k):
        def f():
            ag.rx = type(ag.rx)()        # fresh replay window: measure decoding, not rejection
            (frame,) = dec.feed(frames[k])
            ag.open(frame)
        return f

    body = frames[10][:240]

    def baseline():
        inner = hashlib.sha256(b"\x36" * 64)
        inner.update(body)
        outer = hashlib.sha256(b"\x5c" * 64)
        outer.update(inner.digest())
        outer.digest()

    base = _time(baseline, n)
    out = [("baseline: HMAC-SHA256 of 240 bytes", base, 1.0)]
    for name, fn in (("encode RECORDS x1", enc1), ("encode RECORDS x10", enc10),
                     ("decode RECORDS x1", dec_n(1)), ("decode RECORDS x10", dec_n(10))):
        us = _time(fn, n)
        out.append((name, us, us / base))
    return out


def report(title, results):
    lines = [title]
    for name, us, ratio in results:
        lines.append("  %-36s %9.1f us  %6.2fx baseline" % (name, us, ratio))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report("RL1 codec", run()))
