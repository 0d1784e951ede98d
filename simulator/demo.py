"""`hcp demo` (what `make demo` runs).

Until the simulator, firmware and agent issues land, this shows the part of the chain that exists:
the RL1 protocol between a device and the agent over a real pseudo-terminal serial line. A device
session journals presses, sends them with the record window through COBS frames on the pty; the
agent side opens them with pyserial, authenticates, stores each record once, and acks after
"commit"; line noise and a dropped frame are thrown in. The full hall demo (province server,
agent, six virtual evaluators) replaces this when those parts exist.
"""
from __future__ import annotations

import argparse
import os
import random
import time

import serial
from rich.console import Console
from rich.table import Table

from protocol import cobs, messages as m
from protocol.arq import RecordReceiver, RecordSender
from protocol.errors import ProtocolError
from protocol.session import AGENT, DEVICE, Session

LEVELS = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def run(presses: int = 12, seed: int = 7, console: Console | None = None) -> dict:
    """Play `presses` ratings across a pty serial link; return counters."""
    console = console or Console()
    rng = random.Random(seed)
    key = rng.randbytes(32)               # synthetic demo key, never written anywhere
    master, slave = os.openpty()
    agent_port = serial.Serial(os.ttyname(slave), baudrate=115200, timeout=0)
    dev, ag = Session(1001, key, DEVICE), Session(1001, key, AGENT)
    sender, receiver = RecordSender(), RecordReceiver()
    journal: dict[int, m.Record] = {}
    stored: dict[int, m.Record] = {}
    counts = {"presses": 0, "frames": 0, "rejected": 0, "duplicates": 0, "stored": 0}
    stream_dev, stream_agent = cobs.StreamDecoder(), cobs.StreamDecoder()

    def device_write(frame: bytes, drop: bool = False) -> None:
        counts["frames"] += 1
        if not drop:
            os.write(master, cobs.wire(frame))

    def agent_poll() -> None:
        data = agent_port.read(4096)
        for item in stream_agent.feed(data):
            if isinstance(item, ProtocolError):
                counts["rejected"] += 1
                console.print(f"  [yellow]agent: dropped bytes ({item.reason})[/]")
                continue
            try:
                f, t, fields = ag.open(item)
            except ProtocolError as e:
                counts["rejected"] += 1
                console.print(f"  [yellow]agent: rejected frame ({e.reason})[/]")
                continue
            if t == m.HELLO:
                console.print(f"  agent: HELLO from device {f.device_id}, journal {fields['low']}..")
                frame = ag.hello_ack(rng.randbytes(8), {"time": int(time.time()), "cum": receiver.cum,
                                                        "window": 128, "cat_version": 1})
                agent_port.write(cobs.wire(frame))
            elif t == m.RECORDS:
                receiver.note_low(fields["low"])
                new, dup = receiver.offer([r.rseq for r in fields["records"]])
                counts["duplicates"] += len(dup)
                for r in fields["records"]:
                    if r.rseq in new:
                        stored[r.rseq] = r
                receiver.committed(new)          # the real agent commits to SQLite here
                counts["stored"] = len(stored)
                cum, sack = receiver.ack()
                agent_port.write(cobs.wire(ag.seal(m.ACK, {"cum": cum, "sack": sack})[1]))
        agent_port.flush()

    def device_poll() -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        for item in stream_dev.feed(data):
            if isinstance(item, ProtocolError):
                continue
            f, t, fields = dev.open(item)
            if t == m.HELLO_ACK:
                sender.reset(fields["cum"], fields["window"])
            elif t == m.ACK:
                cum = sender.on_ack(fields["cum"], fields["sack"], _now_ms())
                for r in [r for r in journal if r <= cum]:
                    del journal[r]

    os.set_blocking(master, False)
    console.rule("[bold]RL1 over a pseudo-terminal serial line 串口协议演示")
    console.print(f"agent port {os.ttyname(slave)} (pyserial), device writes the pty master")
    device_write(dev.hello(rng.randbytes(8), {"fw": b"\x00\x01\x00", "boot": 1, "uptime": 3,
                                              "cat_version": 1, "low": 1, "next_rseq": 1,
                                              "status": 0}))
    rseq = 1
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        agent_poll()
        device_poll()
        if dev.established and rseq <= presses:
            level = rng.choice([1, 1, 1, 2, 2, 3, 4, 5])
            reasons = (200 + rng.randint(1, 11),) if level == 4 else (
                (100 + rng.randint(1, 11),) if level == 5 else ())
            journal[rseq] = m.Record(rseq, int(time.time()), 5000 + rseq, 1, level, 0, reasons)
            counts["presses"] += 1
            console.print(f"device: press {rseq}: {level} {LEVELS[level]} journaled")
            rseq += 1
            if rseq == 5:
                os.write(master, b"\x13\x37\xff\x00")      # line noise
        low = min(journal) if journal else rseq
        for batch in sender.poll(_now_ms(), low, rseq - 1):
            frame = dev.seal(m.RECORDS, {"low": low, "records": [journal[r] for r in batch
                                                               if r in journal]})[1]
            device_write(frame, drop=(counts["frames"] == 4))   # one frame lost on the line
        if rseq > presses and not journal:
            break
        time.sleep(0.02)
    agent_port.close()
    os.close(master)
    table = Table(title="stored at the agent 代理已存储")
    for col in ("rseq", "level 满意度", "reasons"):
        table.add_column(col)
    for r in sorted(stored):
        rec = stored[r]
        table.add_row(str(r), f"{rec.level} {LEVELS[rec.level]}", ",".join(map(str, rec.reasons)))
    console.print(table)
    counts["lost"] = counts["presses"] - counts["stored"]
    console.print(counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hcp demo`."""
    p = argparse.ArgumentParser(prog="hcp demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--presses", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    console = Console()
    console.print("[bold]注意 Note:[/] 完整大厅演示（省平台、代理、6 台虚拟评价器）尚在开发；"
                  "the full hall demo (province server, agent, six virtual evaluators) is not "
                  "built yet. This runs the part that exists: the RL1 protocol over a serial pty.")
    counts = run(args.presses, args.seed, console)
    return 0 if counts["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
