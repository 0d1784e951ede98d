"""Appends per second of the firmware journal (firmware/journal.py), on the runtime's own
filesystem. MicroPython subset: `run` works under CPython (real files, OsFs(fsync=True) so every
append reaches the disk) and under the MicroPython runtime (its in-memory filesystem, flush only:
MicroPython has no fsync). The baseline, measured in the same run on the same filesystem, is the
floor a durable append pays there: one raw write of the 24-byte payload to a file opened 'ab',
then flush (+ os.fsync under CPython). The journal writes 32 bytes per record (rseq + payload +
CRC-32), seeks to its slot, and rewrites its state file (temp + rename) once per segment."""

import os
import time

from firmware import fsio
from firmware.journal import Journal

PAYLOAD = 24                  # firmware/ratings.py PAYLOAD_SIZE
SEGMENT_RECORDS = 512         # the firmware default; every run makes thousands of appends, so
                              # segment rollovers (state file rewritten) are in the figures

try:
    _now = time.perf_counter_ns

    def _s(t0):
        return (time.perf_counter_ns() - t0) / 1e9
except AttributeError:        # MicroPython
    _now = time.ticks_us

    def _s(t0):
        return time.ticks_diff(time.ticks_us(), t0) / 1e6


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        os.remove(path + "/" + name)
    os.rmdir(path)


def _median(xs):
    xs = sorted(xs)
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def _chunk(fn, min_s):
    """Run `fn` in groups of 16 until `min_s` seconds passed; (calls, seconds). Time-bounded
    because the WebAssembly runtime's clock ticks in whole milliseconds."""
    count = 0
    t0 = _now()
    while True:
        for _ in range(16):
            fn()
        count += 16
        dt = _s(t0)
        if dt >= min_s:
            return count, dt


def run(root, rounds=40, min_s=0.01, fsync=False):
    """Returns [(case, appends/s, ratio to baseline, appends made)], baseline first. `root` is
    a directory to work in (created, emptied afterwards). The two cases alternate in `rounds`
    chunks of at least `min_s` seconds each, and each figure is the median over its chunks, so
    a disk that is busy for a moment (shared VMs are) neither favours nor penalises one side."""
    try:
        os.mkdir(root)
    except OSError:
        pass
    raw_path = root + "/raw.bin"
    jroot = root + "/journal"
    payload = bytes(range(PAYLOAD))
    # capacity only bounds un-acked records; nothing is allocated for it
    f = open(raw_path, "ab")
    j = Journal(jroot, PAYLOAD, capacity=10000000, fs=fsio.OsFs(fsync=fsync),
                segment_records=SEGMENT_RECORDS)

    def raw():
        f.write(payload)
        f.flush()
        if fsync:
            os.fsync(f.fileno())

    def journal():
        j.append(payload)

    raw_rates, journal_rates = [], []
    raw_n = journal_n = 0
    try:
        raw()                 # warm-up: both files exist and have a block
        journal()
        for _ in range(rounds):
            n, dt = _chunk(raw, min_s)
            raw_rates.append(n / dt)
            raw_n += n
            n, dt = _chunk(journal, min_s)
            journal_rates.append(n / dt)
            journal_n += n
        if j.next_rseq != journal_n + 2:
            raise AssertionError("journal holds %d records, expected %d"
                                 % (j.next_rseq - 1, journal_n + 1))
    finally:
        f.close()
        j.close()
        try:
            os.remove(raw_path)
        except OSError:
            pass
        _rmtree(jroot)
    base = _median(raw_rates)
    rate = _median(journal_rates)
    step = "write+flush+fsync" if fsync else "write+flush"
    return [("baseline: raw %d B %s" % (PAYLOAD, step), base, 1.0, raw_n),
            ("Journal.append (%d B payload)" % PAYLOAD, rate, rate / base, journal_n)]


def report(title, results):
    lines = [title]
    for name, rate, ratio, n in results:
        lines.append("  %-44s %9.0f appends/s  %5.2fx baseline  (%d appends)"
                     % (name, rate, ratio, n))
    return "\n".join(lines)


def cpython_report(rounds=40, min_s=0.01):
    """CPython: real files in a temp dir, every append fsynced (OsFs(fsync=True))."""
    import sys
    import tempfile
    fsync = hasattr(os, "fsync")    # what OsFs(fsync=True) does: fsync where the OS has it
    with tempfile.TemporaryDirectory(prefix="hcp-journal-bench-") as tmp:
        results = run(tmp + "/j", rounds, min_s, fsync)
    return report("Firmware journal, CPython %s, real files in %s (%s)" % (
        sys.version.split()[0], tempfile.gettempdir(),
        "OsFs(fsync=True): os.fsync per append" if fsync else "no fsync on this OS"), results)


def micropython_report(rounds=10, min_s=0.03):
    """The same under the MicroPython runtime (in-memory filesystem, flush only); a line saying
    why when the runtime is not installed. Longer chunks: its clock ticks in milliseconds."""
    from pathlib import Path

    from tests import mpy_runtime
    reason = mpy_runtime.available()
    if reason:
        return "Firmware journal, MicroPython: skipped (%s)" % reason
    code = ("import journal_bench\n"
            "print(journal_bench.report('Firmware journal, MicroPython (WebAssembly runtime, "
            "in-memory FS, flush per append)', journal_bench.run('/bench', %d, %r)))"
            % (rounds, min_s))
    src = Path(__file__).read_text()
    return mpy_runtime.run(code, packages=("firmware", "protocol"),
                           files={"/lib/journal_bench.py": src}).rstrip()


if __name__ == "__main__":
    print(cpython_report())
    print(micropython_report())
