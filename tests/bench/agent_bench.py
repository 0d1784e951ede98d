"""The edge agent's ingest path on real SQLite files, and how long a committed rating takes to
reach the province.

1. Throughput: N device links each ingest 1-record batches through the real `Agent` (production
   `Tuning`: group commit with 10 ms linger and up to 100 rows, WAL, synchronous=FULL). Baseline,
   in the same run and the same temp dir: the same rows inserted into the same `ratings` table by
   a plain sqlite3 connection (WAL, synchronous=FULL), one transaction (one fsync) per rating.
   Two link shapes: one frame in flight per device (live presses: each device waits for its ACK)
   and 16 frames in flight per device (a backlog drain; the serial/MQTT session spawns one ingest
   per RECORDS frame, so a device's window keeps several in flight).
2. Latency: from `Agent.ingest` returning (= COMMIT, when the link may ACK) to the province
   reference server (gbt39046-json, in-process, loopback) having stored the upload: its
   `receivedAt` in `GET /_records` minus the wall time at which ingest returned (same process,
   same clock). Ratings go one at a time, each bound to its own case through an invitation.
   Baseline, interleaved sample by sample: one POST of a rating of the same shape straight to the
   same server, round trip (request, validation, its SQLite commit, reply).

The whole run is bounded (each phase has a timeout; about 10 s in all on a 2-core machine).
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp

from edge_agent import binding
from edge_agent.upstream.profiles.base import RATING, BuildContext, Job, Reasons
from edge_agent.upstream.registry import get_profile
from edge_agent.agent import Agent, Tuning
from edge_agent.config import load_config
from edge_agent.schema import MIGRATIONS
from simulator.province import ServerConfig, running_server
from tests.agent_support import AREA, PRIVACY_KEY, case_body, rec

DEVICES = 6
PER_DEVICE = 300
PIPELINED = 16               # frames in flight per device in the backlog-drain case
LATENCY_SAMPLES = 150
PHASE_TIMEOUT_S = 20.0       # a phase that takes longer is a hang, not a figure
FIRST_DEVICE = 1001
HALL_CODE = "T01"
GBT = get_profile("gbt39046-json")


def _config(tmp: Path, name: str, upstream_url: str) -> Path:
    """A hall.toml with DEVICES windows and devices (synthetic names), storage `<name>.db`."""
    windows = "".join(f'\n[[windows]]\nid = "A{i + 1:02d}"\nname = "{i + 1}号窗（测试）"\n'
                      for i in range(DEVICES))
    devices = "".join(f'\n[[devices]]\nid = {FIRST_DEVICE + i}\nwindow = "A{i + 1:02d}"\n'
                      f'link = "serial"\nport = "/dev/null"\n'
                      f'key_file = "keys/{FIRST_DEVICE + i}.key"\n' for i in range(DEVICES))
    text = f"""
[hall]
name = "测试大厅（虚构）"
area_code = "{AREA}"
hall_code = "{HALL_CODE}"

[agent]
storage = "{name}.db"
listen = "127.0.0.1:0"
{windows}{devices}
[upstream]
profile = "gbt39046-json"
url = "{upstream_url}"
auth = "none"
timeout_s = 5
data_source = "001"

[alerts]

[privacy]
key = "{PRIVACY_KEY}"
"""
    path = tmp / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _records() -> list[tuple[int, object]]:
    """(device id, record) for every rating, devices interleaved as they would arrive."""
    return [(FIRST_DEVICE + d, rec(r, level=1 + r % 3)) for r in range(1, PER_DEVICE + 1)
            for d in range(DEVICES)]


# ------------------------------------------------------------------------- throughput

def _baseline_inserts(path: Path, rows: list[tuple[int, object]]) -> float:
    """Ratings/s: one transaction + COMMIT (fsync) per rating, same table and indexes."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        for sql in MIGRATIONS[0][1]:
            conn.execute(sql)
        received_at = time.time()
        t0 = time.perf_counter()
        for device_id, r in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO ratings(device_id, rseq, global_id, device_time, assess_time,"
                " time_source, received_at, invite_id, cat_version, level, flags, reasons, window,"
                " binding, unbound_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'unbound','no_case')",
                (device_id, r.rseq, binding.global_id(HALL_CODE, device_id, r.rseq), r.time,
                 float(r.time), "device", received_at, r.invite_id, r.cat_version, r.level,
                 r.flags, "[]", f"A{device_id - FIRST_DEVICE + 1:02d}"))
            conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        if conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] != len(rows):
            raise AssertionError("baseline: rows missing")
    finally:
        conn.close()
    return len(rows) / dt


async def _agent_ingest(cfg: Path, rows: list[tuple[int, object]], in_flight: int
                        ) -> tuple[float, int]:
    """(ratings/s, commits) through a real Agent; each device keeps `in_flight` frames of one
    record in flight, in rseq order, the next sent as soon as one is acknowledged (committed)."""
    agent = Agent(load_config(cfg), Tuning())
    await agent.start()
    try:
        per_device: dict[int, list] = {}
        for device_id, r in rows:
            per_device.setdefault(device_id, []).append(r)

        async def link(device_id: int, queue: list) -> None:
            while queue:
                r = queue.pop(0)
                result = await agent.ingest(device_id, [r], time.time())
                if result.new != [r.rseq]:
                    raise AssertionError(f"device {device_id} rseq {r.rseq}: {result}")

        commits0 = agent.writer.commits
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(
            link(device_id, queue) for device_id, queue in per_device.items()
            for _ in range(in_flight))), PHASE_TIMEOUT_S)
        dt = time.perf_counter() - t0
        commits = agent.writer.commits - commits0
        stored = agent.reader().execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
        if stored != len(rows):
            raise AssertionError(f"agent stored {stored} of {len(rows)} ratings")
    finally:
        await agent.stop()
    return len(rows) / dt, commits


# ------------------------------------------------------------------------- latency

def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


async def _post_rating(session: aiohttp.ClientSession, url: str, i: int, ctx: BuildContext
                       ) -> float:
    """One rating POSTed straight to the province, as the uploader would; seconds round trip."""
    rating = {"level": 1, "assess_time": time.time(), "assess_number": 1, "reasons": [],
              "flags": 8, "cat_version": 1}
    job = Job(RATING, i, f"{HALL_CODE}-base-{i}", 0, {"project_no": f"BENCHBASE{i:05d}"},
              rating=rating, applicant={"name": "测试1号"})
    body = GBT.body(RATING, [job], ctx)
    headers = {"Content-Type": GBT.content_type + "; charset=utf-8",
               "Idempotency-Key": f"{HALL_CODE}-base-{i}"}
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        result = resp.headers.get("X-Result")
    dt = time.perf_counter() - t0
    if resp.status != 200 or result != "accepted":
        raise AssertionError(f"baseline POST answered {resp.status} {result}")
    return dt


async def _latency(cfg: Path, province_url: str, upload_url: str, samples: int
                   ) -> tuple[list[float], list[float]]:
    """(baseline round trips, commit->province delays), seconds, first sample of each dropped
    (it opens the connection)."""
    config = load_config(cfg)
    agent = Agent(config, Tuning())
    ctx = BuildContext(config, lambda r: Reasons([]), None)
    await agent.start()
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # one case per rating, each with an invitation on device 1001 (no link registered:
            # the invitation waits; a press carrying its id binds to the case all the same)
            replies = await asyncio.wait_for(asyncio.gather(*(
                agent.intake_case(case_body(f"BENCH{i:05d}", window="A01", n=1 + i % 900))
                for i in range(samples + 1))), PHASE_TIMEOUT_S)
            invites = []
            for status, reply in replies:
                if status != 201:
                    raise AssertionError(f"case intake answered {status}")
                invites.append(reply["invitations"][-1]["inviteId"])

            base: list[float] = []
            committed_at: dict[str, float] = {}
            deadline = time.monotonic() + PHASE_TIMEOUT_S
            reader = agent.reader()
            for i, invite_id in enumerate(invites):
                base.append(await _post_rating(session, upload_url, i, ctx))
                rseq = i + 1
                await agent.ingest(FIRST_DEVICE, [rec(rseq, level=1, invite_id=invite_id)],
                                   time.time())
                gid = binding.global_id(HALL_CODE, FIRST_DEVICE, rseq)
                committed_at[gid] = time.time()
                # one at a time: the next rating only once this one's upload is confirmed
                while True:
                    row = reader.execute("SELECT state, last_error FROM outbox WHERE global_id = ?",
                                         (gid,)).fetchone()
                    if row is not None and row[0] == "done":
                        break
                    if row is not None and row[0] == "parked":
                        raise AssertionError(f"upload of {gid} parked: {row[1]}")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"latency phase exceeded {PHASE_TIMEOUT_S} s")
                    await asyncio.sleep(0.001)

            async with session.get(province_url + "/_records") as resp:
                stored = json.loads(await resp.read())["records"]
    finally:
        await agent.stop()
    delays = []
    for gid, t in committed_at.items():
        if gid not in stored:
            raise AssertionError(f"province does not hold {gid}")
        delays.append(stored[gid]["receivedAt"] - t)
    return base[1:], delays[1:]


# ------------------------------------------------------------------------- report

async def _run(tmp: Path, province: running_server) -> dict:
    rows = _records()
    out: dict = {"rows": len(rows)}
    out["baseline"] = _baseline_inserts(tmp / "baseline.db", rows)
    out["live"] = await _agent_ingest(_config(tmp, "live", province.url), rows, 1)
    out["drain"] = await _agent_ingest(_config(tmp, "drain", province.url), rows, PIPELINED)
    out["latency"] = await _latency(_config(tmp, "latency", province.url), province.url,
                                    province.upload_url, LATENCY_SAMPLES)
    return out


def report() -> str:
    """Run both parts (≈10 s) and format the figures."""
    with tempfile.TemporaryDirectory(prefix="hcp-agent-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with running_server(ServerConfig(profile="gbt39046-json",
                                         db=tmp / "province.sqlite3")) as province:
            r = asyncio.run(_run(tmp, province))
    tuning = Tuning()
    base = r["baseline"]
    lines = [f"Edge agent ingest: {DEVICES} devices x {PER_DEVICE} ratings, 1 record/frame "
             f"(WAL, synchronous=FULL, files in {tempfile.gettempdir()})",
             f"  {'baseline: 1 transaction + fsync per rating':<52} {base:7.0f} ratings/s  "
             f"{1:5.2f}x baseline"]
    for key, what in (("live", "1 frame in flight per device"),
                      ("drain", f"{PIPELINED} frames in flight per device")):
        rate, commits = r[key]
        lines.append(f"  {'Agent.ingest, ' + what:<52} {rate:7.0f} ratings/s  "
                     f"{rate / base:5.2f}x baseline  ({commits} commits, "
                     f"{r['rows'] / max(1, commits):.1f} ratings/commit)")
    lines.append(f"  (group commit: linger {tuning.linger_s * 1000:.0f} ms, "
                 f"at most {tuning.max_rows} rows per commit)")
    base_rt, delays = r["latency"]
    b50, b99 = _pct(base_rt, 50) * 1000, _pct(base_rt, 99) * 1000
    d50, d99 = _pct(delays, 50) * 1000, _pct(delays, 99) * 1000
    lines += [
        f"Commit to province: gbt39046-json reference server over loopback, "
        f"{len(delays)} ratings one at a time",
        f"  {'baseline: one POST of a rating, round trip':<52} p50 {b50:5.1f} ms  "
        f"p99 {b99:5.1f} ms  1.00x / 1.00x baseline",
        f"  {'ingest returned -> province stored it':<52} p50 {d50:5.1f} ms  "
        f"p99 {d99:5.1f} ms  {d50 / b50:4.2f}x / {d99 / b99:4.2f}x baseline",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
