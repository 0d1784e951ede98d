"""`make bench`: run every benchmark and print the figures."""
from __future__ import annotations

import sys
from pathlib import Path

from tests import mpy_runtime
from tests.bench import agent_bench, codec_bench, journal_bench, link_bench

HERE = Path(__file__).resolve().parent


def main() -> int:
    print(codec_bench.report("RL1 codec, CPython %s" % sys.version.split()[0], codec_bench.run(3000)))
    reason = mpy_runtime.available()
    if reason:
        print(f"RL1 codec, MicroPython: skipped ({reason})")
    else:
        src = (HERE / "codec_bench.py").read_text()
        print(mpy_runtime.run("import codec_bench\nprint(codec_bench.report("
                              "'RL1 codec, MicroPython (WebAssembly runtime)', codec_bench.run(300)))",
                              files={"/lib/codec_bench.py": src}).rstrip())
    print(link_bench.report())
    print(journal_bench.cpython_report())
    print(journal_bench.micropython_report())
    print(agent_bench.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
