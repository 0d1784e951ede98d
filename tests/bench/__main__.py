"""`make bench` / `python -m tests.bench [NAME ...]`: run benchmarks and print their figures.

Each benchmark prints ratios against a baseline measured in the same run; with no NAME, all of
them run in the order below. A new benchmark adds one entry to BENCHES.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


def codec() -> None:
    from tests import mpy_runtime
    from tests.bench import codec_bench
    print(codec_bench.report("RL1 codec, CPython %s" % sys.version.split()[0], codec_bench.run(3000)))
    reason = mpy_runtime.available()
    if reason:
        print(f"RL1 codec, MicroPython: skipped ({reason})")
        return
    src = (HERE / "codec_bench.py").read_text()
    print(mpy_runtime.run("import codec_bench\nprint(codec_bench.report("
                          "'RL1 codec, MicroPython (WebAssembly runtime)', codec_bench.run(300)))",
                          files={"/lib/codec_bench.py": src}).rstrip())


def link() -> None:
    from tests.bench import link_bench
    print(link_bench.report())


def journal() -> None:
    from tests.bench import journal_bench
    print(journal_bench.cpython_report())
    print(journal_bench.micropython_report())


def mpy_heap() -> None:
    from tests.bench import heap_bench
    print(heap_bench.report())


def sim_runtime() -> None:
    from tests.bench import sim_runtime_bench
    print(sim_runtime_bench.report())


def agent() -> None:
    from tests.bench import agent_bench
    print(agent_bench.report())


def console() -> None:
    from tests.bench import console_bench
    print(console_bench.report())


def upload_drain() -> None:
    from tests.bench import upload_bench
    print(upload_bench.report())


def serial_boot() -> None:
    from tests.bench import serial_boot_bench
    print(serial_boot_bench.report())


def mqtt_ingest() -> None:
    from tests.bench import mqtt_ingest_bench
    print(mqtt_ingest_bench.report())


BENCHES: dict[str, Callable[[], None]] = {
    "codec": codec,
    "link": link,
    "journal": journal,
    "agent": agent,
    "mpy-heap": mpy_heap,
    "sim-runtime": sim_runtime,
    "console": console,
    "upload-drain": upload_drain,
    "serial-boot": serial_boot,
    "mqtt-ingest": mqtt_ingest,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHES)}",
              file=sys.stderr)
        return 2
    for name in names:
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
