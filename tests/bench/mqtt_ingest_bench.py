"""MQTT ingest at hall scale: 200 evaluators drain their journal backlogs through one Mosquitto
into the real agent, against a bare subscriber on the same broker in the same run.

    python -m tests.bench mqtt-ingest          (or: python -m tests.bench.mqtt_ingest_bench
                                                 [--devices N] [--backlog N])

1. Durable: a real Mosquitto (the shipped ACL and queue limits, per-device passwords), the real
   agent (`Agent` with production `Tuning`, `start_links`: the MQTT link and one RL1 session per
   device, SQLite with WAL, synchronous=FULL and group commit, production JSON logging at info
   to a file), and a device farm in its own process (tests/bench/mqtt_farm.py: RL1 Session +
   RecordSender over the firmware's MQTT client). Every device says HELLO and drains a backlog of
   BACKLOG records; timed from HELLO to the last device holding an ACK for every record (an ACK
   follows the COMMIT). The agent's database must then hold every record exactly once.
2. Storage alone, for reference: the same records through `Agent.ingest` (no MQTT, no RL1),
   each device with one 10-record batch in flight.
3. Bare: a fresh broker, a paho-mqtt 2.x subscriber (MQTT v5, QoS 1, paho's automatic PUBACK,
   callbacks counting messages and nothing else) in this process where the agent ran, and the
   same farm publishing the same records in the same 10-record RECORDS frames, as fast as its
   MQTT client's in-flight limit allows. Timed from the first publish to the last message
   received; three runs, the median counts.

The last line is `ratio=<durable ratings/s ÷ bare ratings/s> drops=<frames the agent's link
dropped at its queue> resent=<% of records a device sent more than once>`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent, Tuning
from edge_agent.config import load_config
from edge_agent.links import start_links, stop_links
from edge_agent.logs import setup_logging
from protocol import messages as m
from tests.agent_links_support import (AGENT_USER, ROOT, Broker, mosquitto_missing,
                                       shipped_limits)
from tests.agent_support import AREA, PRIVACY_KEY

DEVICES = 200
BACKLOG = 500                # records each device holds when it connects
BARE_RUNS = 3                # the bare phase is short: its median of three runs counts
FIRST_DEVICE = 2001
HALL = "T01"
AGENT_PASSWORD = "bench-agent-pw"
PHASE_TIMEOUT_S = 120.0


def _config(tmp: Path, devices: dict[int, dict], broker_port: int) -> Path:
    """hall.toml: one window per device, every device on MQTT (synthetic names and keys)."""
    keys = tmp / "keys"
    keys.mkdir(exist_ok=True)
    parts = [f"""
[hall]
name = "测试大厅（虚构）"
area_code = "{AREA}"
hall_code = "{HALL}"

[agent]
storage = "agent.db"
listen = "127.0.0.1:0"
"""]
    for did in devices:
        parts.append(f'\n[[windows]]\nid = "W{did}"\nname = "{did}号窗（测试）"\n')
    for did, d in devices.items():
        (keys / f"{did}.key").write_bytes(bytes.fromhex(d["key"]))
        parts.append(f'\n[[devices]]\nid = {did}\nwindow = "W{did}"\nlink = "mqtt"\n'
                     f'key_file = "keys/{did}.key"\n')
    parts.append(f"""
[broker]
host = "127.0.0.1"
port = {broker_port}
username = "{AGENT_USER}"
password = "{AGENT_PASSWORD}"

[upstream]
profile = "gbt39046-json"
url = "http://127.0.0.1:9/"
auth = "none"
timeout_s = 2

[alerts]

[privacy]
key = "{PRIVACY_KEY}"
""")
    path = tmp / "hall.toml"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _broker(tmp: Path, devices: dict[int, dict], name: str) -> Broker:
    users = {AGENT_USER: AGENT_PASSWORD, **{str(did): d["password"]
                                            for did, d in devices.items()}}
    b = Broker(tmp, users, conf_lines=shipped_limits(), log_types=("error", "warning"),
               name=name)
    b.start()
    return b


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Farm:
    """tests/bench/mqtt_farm.py as a subprocess: job in, `ready`, `go`, result out."""

    def __init__(self, job: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.bench.mqtt_farm"],
                                     cwd=str(ROOT), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def ready(self) -> None:
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"device farm did not start: {line!r}")

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict:
        line = self.proc.stdout.readline()
        self.proc.wait(30)
        if not line:
            raise RuntimeError("device farm ended without a result")
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _durable(tmp: Path, devices: dict[int, dict], backlog: int) -> dict:
    broker = _broker(tmp, devices, "broker-durable")
    cfg = _config(tmp, devices, broker.port)
    log_file = open(tmp / "agent.log", "w", encoding="utf-8")
    handler = setup_logging("info", log_file)
    farm = None
    agent = Agent(load_config(cfg), Tuning())
    await agent.start()
    links: list = []
    try:
        links = await start_links(agent, agent.config)
        link = links[0]
        deadline = time.monotonic() + 10
        while not link.connected:
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not connect to the broker")
            await asyncio.sleep(0.05)
        farm = Farm({"mode": "rl1", "port": broker.port, "hall": HALL, "backlog": backlog,
                     "devices": {str(k): v for k, v in devices.items()},
                     "timeout_s": PHASE_TIMEOUT_S})
        await _in_thread(farm.ready)
        cpu0 = time.process_time()
        broker0 = _cpu_s(broker.proc.pid)
        farm.go()
        out = await asyncio.wait_for(_in_thread(farm.result), PHASE_TIMEOUT_S + 30)
        out["agent_cpu_s"] = time.process_time() - cpu0
        out["broker_cpu_s"] = _cpu_s(broker.proc.pid) - broker0
        out["dropped"] = agent.rejected.get("mqtt_queue_full", 0)
        out["held_max"] = link.held_max
        out["receive_maximum"] = link.receive_maximum
        out["paused"] = link.paused
        out["window"] = link.window
        out["connects"] = link.connects
        out["commits"] = agent.writer.commits
        out["stored"] = agent.reader().execute(
            "SELECT COUNT(*), COUNT(DISTINCT device_id || '-' || rseq) FROM ratings").fetchone()
    finally:
        if farm is not None:
            farm.kill()
        await stop_links(links)
        await agent.stop()
        logging.getLogger("edge_agent").removeHandler(handler)
        log_file.close()
        broker.kill()
    return out


async def _storage(tmp: Path, devices: dict[int, dict], backlog: int) -> dict:
    """The same records through `Agent.ingest` alone (no MQTT, no RL1): each device one
    10-record batch in flight, as in the durable phase — the storage ceiling."""
    sub = tmp / "storage"
    sub.mkdir()
    agent = Agent(load_config(_config(sub, devices, 1)), Tuning())
    await agent.start()
    try:
        async def device(did: int) -> None:
            for start in range(1, backlog + 1, 10):
                recs = [m.Record(r, 1795000000 + r, 0, 1, 1 + r % 5, m.REC_UNSOLICITED)
                        for r in range(start, min(start + 10, backlog + 1))]
                await agent.ingest(did, recs, time.time())
        t0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.wait_for(asyncio.gather(*(device(d) for d in devices)), PHASE_TIMEOUT_S)
        return {"s": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0}
    finally:
        await agent.stop()


def _bare(tmp: Path, devices: dict[int, dict], backlog: int, name: str) -> dict:
    broker = _broker(tmp, devices, name)
    frames = len(devices) * ((backlog + 9) // 10)
    got = {"n": 0, "last": 0.0}
    all_in = threading.Event()

    def on_message(client, userdata, msg) -> None:
        got["n"] += 1
        if got["n"] >= frames:
            got["last"] = time.monotonic()
            all_in.set()

    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-subscriber",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(AGENT_USER, AGENT_PASSWORD)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda cl, *a: cl.subscribe(f"hcp/v1/{HALL}/+/up", qos=1)
    farm = None
    try:
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("bare subscriber: no SUBACK")
        farm = Farm({"mode": "bare", "port": broker.port, "hall": HALL, "backlog": backlog,
                     "devices": {str(k): v for k, v in devices.items()},
                     "timeout_s": PHASE_TIMEOUT_S})
        farm.ready()
        cpu0 = time.process_time()
        broker0 = _cpu_s(broker.proc.pid)
        farm.go()
        out = farm.result()
        if not all_in.wait(PHASE_TIMEOUT_S):
            raise RuntimeError(f"bare subscriber got {got['n']} of {frames} messages")
        out["broker_cpu_s"] = _cpu_s(broker.proc.pid) - broker0
        out["t_end"] = got["last"]
        out["sub_cpu_s"] = time.process_time() - cpu0
        out["messages"] = got["n"]
    finally:
        if farm is not None:
            farm.kill()
        c.disconnect()
        c.loop_stop()
        broker.kill()
    return out


def run(n_devices: int = DEVICES, backlog: int = BACKLOG) -> dict:
    """Both phases in one temp dir; returns their raw figures."""
    devices = {FIRST_DEVICE + i: {"key": os.urandom(32).hex(),
                                  "password": f"bench-dev-{FIRST_DEVICE + i}-pw"}
               for i in range(n_devices)}
    with tempfile.TemporaryDirectory(prefix="hcp-mqtt-bench-") as name:
        tmp = Path(name)
        durable = asyncio.run(_durable(tmp, devices, backlog))
        storage = asyncio.run(_storage(tmp, devices, backlog))
        runs = sorted((_bare(tmp, devices, backlog, f"broker-bare-{i}") for i in range(BARE_RUNS)),
                      key=lambda b: b["t_end"] - b["t_go"])
        bare = dict(runs[len(runs) // 2])
        bare["all_s"] = [b["t_end"] - b["t_go"] for b in runs]
    return {"devices": n_devices, "backlog": backlog, "durable": durable, "bare": bare,
            "storage": storage}


def report(n_devices: int = DEVICES, backlog: int = BACKLOG) -> str:
    """Run the bench (≈ 1 min) and format it; the last line is the summary the issue asks for."""
    reason = mosquitto_missing()
    if reason:
        return f"MQTT ingest: skipped ({reason})"
    r = run(n_devices, backlog)
    d, b = r["durable"], r["bare"]
    records = d["records"]
    stored, distinct = d["stored"]
    if d["unfinished"] or stored != records or distinct != records:
        raise AssertionError(f"durable phase: {d['unfinished']} devices unfinished, "
                             f"{stored} rows ({distinct} distinct) for {records} records")
    d_rate = records / (d["t_end"] - d["t_go"])
    b_rate = b["records"] / (b["t_end"] - b["t_go"])
    resent = 100.0 * d["resent_records"] / records
    lines = [
        f"MQTT ingest: {r['devices']} devices x {r['backlog']} backlog records, one Mosquitto "
        f"(shipped ACL and limits), 10 records/frame",
        f"  {'bare paho subscriber (QoS 1, counts only)':<48} {b_rate:8.0f} ratings/s  1.00x  "
        f"({b['messages']} messages, median of {' / '.join(f'{t:.2f}' for t in b['all_s'])} s; "
        f"CPU s: subscriber {b['sub_cpu_s']:.1f}, devices {b['cpu_s']:.1f}, broker "
        f"{b['broker_cpu_s']:.1f})",
        f"  {'agent: RL1 + SQLite commit + ACK (durable)':<48} {d_rate:8.0f} ratings/s  "
        f"{d_rate / b_rate:5.2f}x  ({d['t_end'] - d['t_go']:.2f} s, {d['commits']} commits; CPU s: "
        f"agent {d['agent_cpu_s']:.1f}, devices {d['cpu_s']:.1f}, broker "
        f"{d['broker_cpu_s']:.1f})",
        f"  {'same records via Agent.ingest alone (storage)':<48} "
        f"{records / r['storage']['s']:8.0f} ratings/s  {records / r['storage']['s'] / b_rate:5.2f}x"
        f"  (CPU {r['storage']['cpu_s']:.1f} s)",
        f"  device side: {d['frames']} frames, {d['records_sent']} records sent for {records} "
        f"({d['rl1_retransmitted']} RL1 retransmissions, {d['hellos']} HELLOs, "
        f"{d['link_dropped']} frames over the MQTT in-flight limit, {d['mqtt_resent']} MQTT "
        f"resends); median SRTT {d['srtt_ms']} ms, RTO {d['rto_ms']} ms",
        f"  agent link: {d['dropped']} frames dropped at the queue, at most {d['held_max']} "
        f"messages held un-PUBACKed (Receive Maximum {d['receive_maximum']}), reading paused "
        f"{d['paused']} times, RL1 window {d['window']}, {d['connects']} connection(s)",
        f"ratio={d_rate / b_rate:.2f} drops={d['dropped']} resent={resent:.1f}%",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=DEVICES)
    ap.add_argument("--backlog", type=int, default=BACKLOG)
    a = ap.parse_args()
    print(report(a.devices, a.backlog))
