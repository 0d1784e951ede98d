"""Drain speed of the outbox: a 20,000-job backlog (10,000 cases: each a service record and a
rating) uploaded in `national-sm2` to the reference province (`hcp province serve`, its own
process, loopback, SQLite with synchronous=FULL, SM2 checked with its own package).

* baseline: a bare keep-alive aiohttp client posts the same request bodies — built beforehand by
  the agent's own profile code from a second backlog of the same shape (other case numbers), so
  the province accepts them — with the same concurrency (`max_in_flight`), service batches first,
  then rating batches; it only checks each reply says code "0".
* uploader: the real `Agent` (production `Tuning`) starts on a database holding the backlog and
  drains it: reading jobs, opening the sealed rater data, building and encrypting every body,
  signing, settling each batch in one commit. Timed from `Agent.start()` until every job is
  confirmed done.

Both phases run in the same run against the same server, twice, in alternating order (each
round with fresh case numbers and a fresh agent database); the best of the two rounds of each is
compared, because on a shared two-core machine a single run mostly measures the neighbours. The
last line is `ratio=<x>` (best uploader jobs/s over best baseline jobs/s). Target ≥ 0.8.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from edge_agent.agent import Agent, Tuning
from edge_agent.cases import case_row, validate_case
from edge_agent.config import load_config
from edge_agent.privacy import Sealer
from edge_agent.schema import migrate
from edge_agent.store import connect
from edge_agent.upstream.auth import make_auth
from edge_agent.upstream.catalogue import Catalogues
from edge_agent.upstream.profiles.base import RATING, SERVICE, BuildContext, Job
from edge_agent.upstream.registry import get_profile
from edge_agent.upstream.worker import endpoint
from simulator.upstream_setup import profile_setup
from tests.agent_support import AREA, PRIVACY_KEY, case_body

CASES = 10_000               # -> 20,000 jobs
PROFILE = "national-sm2"
HALL_CODE = "T01"
DEVICE = 1001
PHASE_TIMEOUT_S = 150.0
ROUNDS = 2


def _config(tmp: Path, url: str, lines: list[str], name: str = "agent") -> Path:
    text = f"""
[hall]
name = "测试大厅（虚构）"
area_code = "{AREA}"
hall_code = "{HALL_CODE}"

[agent]
storage = "{name}.db"
listen = "127.0.0.1:0"

[[windows]]
id = "A01"
name = "一号窗（测试）"

[[devices]]
id = {DEVICE}
window = "A01"
link = "serial"
port = "/dev/null"
key_file = "keys/{DEVICE}.key"

[upstream]
profile = "{PROFILE}"
url = "{url}"
timeout_s = 30
catalogue_fetch = false
{chr(10).join(lines)}

[privacy]
key = "{PRIVACY_KEY}"
"""
    path = tmp / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _cases(prefix: str) -> list[tuple]:
    """[(case input, level, reasons)] for CASES synthetic cases."""
    out = []
    for i in range(CASES):
        case, errors = validate_case(case_body(f"{prefix}-{i:05d}", n=1 + i % 900), {"A01"})
        assert case is not None, errors
        level = 1 + i % 5
        reasons = [(100 if level == 5 else 200) + 1 + i % 11] if level >= 4 else []
        out.append((case, level, reasons))
    return out


def _backlog(db_path: str, cases: list[tuple], sealer: Sealer) -> None:
    """The database as the agent leaves it after intake and binding, uploads not yet done."""
    db = connect(db_path)
    migrate(db)
    now = time.time()
    with db.conn:
        for rseq, (case, level, reasons) in enumerate(cases, 1):
            row = case_row(case, sealer, now)
            cols = ", ".join(row)
            cur = db.conn.execute(f"INSERT INTO cases({cols}) VALUES ({', '.join('?' * len(row))})",
                                  tuple(row.values()))
            case_id = cur.lastrowid
            db.conn.execute("INSERT INTO upstream_services(case_id, service_number, state, next_at,"
                            " created_at) VALUES (?, 1, 'pending', ?, ?)", (case_id, now, now))
            gid = f"{HALL_CODE}-{DEVICE}-{rseq}"
            cur = db.conn.execute(
                "INSERT INTO ratings(device_id, rseq, global_id, device_time, assess_time,"
                " time_source, received_at, invite_id, cat_version, level, flags, reasons, window,"
                " case_id, binding, assess_number, bound_at) VALUES"
                " (?,?,?,?,?,'device',?,0,1,?,8,?,'A01',?,'inferred',1,?)",
                (DEVICE, rseq, gid, int(now), now - 60, now, level, json.dumps(reasons), case_id,
                 now))
            db.conn.execute("UPDATE cases SET rated_rating_id = ? WHERE id = ?",
                            (cur.lastrowid, case_id))
            db.conn.execute("INSERT INTO outbox(rating_id, global_id, state, next_at, created_at)"
                            " VALUES (?, ?, 'pending', ?, ?)", (cur.lastrowid, gid, now, now))
    db.close()


def _bodies(config, cases: list[tuple], sealer: Sealer) -> list[tuple[str, list[bytes]]]:
    """[(url, bodies)] for services then ratings, built by the agent's profile code."""
    profile = get_profile(PROFILE)
    ctx = BuildContext(config, Catalogues().reasons, make_auth(config.upstream))
    batch = profile.batch_limit(config.upstream)
    out = []
    for kind in (SERVICE, RATING):
        bodies = []
        for start in range(0, len(cases), batch):
            jobs = []
            for i, (case, level, reasons) in enumerate(cases[start:start + batch], start):
                row = {**case_row(case, sealer, 0.0), "id": i + 1}
                rating = {"level": level, "assess_time": time.time() - 60, "assess_number": 1,
                          "reasons": reasons, "flags": 8, "cat_version": 1}
                jobs.append(Job(kind, i, f"k{i}", 0, row, rating=rating,
                                applicant=dict(case.applicant)))
            ctx.now = time.time()
            bodies.append(profile.body(kind, jobs, ctx))
        out.append((endpoint(config, kind), bodies))
    return out


async def _bare(plan: list[tuple[str, list[bytes]]], in_flight: int) -> float:
    """Seconds for a bare keep-alive client to post every body, `in_flight` at a time."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        t0 = time.perf_counter()
        for url, bodies in plan:
            queue = list(reversed(bodies))

            async def worker() -> None:
                while queue:
                    body = queue.pop()
                    async with session.post(url, data=body, headers=headers) as resp:
                        reply = await resp.read()
                    if resp.status != 200 or json.loads(reply).get("code") != "0":
                        raise AssertionError(f"baseline POST refused: {reply[:300]!r}")
            await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - t0


async def _uploader(cfg: Path) -> tuple[float, int]:
    """(seconds for the real agent to drain the backlog, requests it made)."""
    agent = Agent(load_config(cfg), Tuning())
    t0 = time.perf_counter()
    await agent.start()
    try:
        reader = agent.reader()
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while True:
            left = reader.execute("SELECT (SELECT COUNT(*) FROM outbox WHERE state != 'done') +"
                                  " (SELECT COUNT(*) FROM upstream_services WHERE state !="
                                  " 'done')").fetchone()[0]
            if left == 0:
                break
            parked = reader.execute("SELECT last_error FROM outbox WHERE state = 'parked' UNION"
                                    " SELECT last_error FROM upstream_services WHERE state ="
                                    " 'parked' LIMIT 1").fetchone()
            if parked:
                raise AssertionError(f"upload parked: {parked[0]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"uploader did not drain within {PHASE_TIMEOUT_S} s")
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0, agent.uploader.latency.total
    finally:
        await agent.stop()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _province(tmp: Path, args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tools.hcp", "province", "serve", "--profile",
                             PROFILE, "--port", "0", "--db", str(tmp / "province.sqlite3"),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"province did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def report() -> str:
    """Run both phases twice (about a minute and a half on two cores) and format the figures."""
    rounds: list[tuple[float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="hcp-upload-bench-") as name:
        tmp = Path(name)
        lines, args = profile_setup(tmp, PROFILE, AREA)
        proc, url = _province(tmp, args)
        try:
            for r in range(ROUNDS):
                cfg = _config(tmp, url, lines, f"agent{r}")
                config = load_config(cfg)
                sealer = Sealer(config.privacy_key)
                plan = _bodies(config, _cases(f"BASE{r}"), sealer)
                _backlog(config.storage, _cases(f"UPL{r}"), sealer)
                in_flight = config.upstream.max_in_flight
                if r % 2 == 0:
                    base_s = asyncio.run(_bare(plan, in_flight))
                    up_s, requests = asyncio.run(_uploader(cfg))
                else:
                    up_s, requests = asyncio.run(_uploader(cfg))
                    base_s = asyncio.run(_bare(plan, in_flight))
                rounds.append((base_s, up_s, requests))
            stats = _get_json(url + "/_stats")
        finally:
            proc.terminate()
            proc.wait(10)
    jobs = 2 * CASES
    if stats["accepted"] != jobs * ROUNDS or stats["services"] != jobs * ROUNDS or \
            stats["rejected"]:
        raise AssertionError(f"province did not hold every record exactly once: {stats}")
    out = [f"Outbox drain, {PROFILE}: {jobs} jobs ({CASES} service records + {CASES} ratings), "
           f"{config.upstream.batch_size} records/request, {in_flight} requests in flight, "
           "reference province on loopback (own process, SQLite synchronous=FULL)"]
    for i, (base_s, up_s, requests) in enumerate(rounds, 1):
        out += [f"  round {i} {'baseline: bare keep-alive client, prebuilt bodies':<52} "
                f"{jobs / base_s:7.0f} jobs/s ({base_s:5.1f} s, {len(plan[0][1]) * 2} requests)",
                f"  round {i} {'uploader: Agent draining the backlog':<52} "
                f"{jobs / up_s:7.0f} jobs/s ({up_s:5.1f} s, {requests} requests)"]
    best_base = jobs / min(r[0] for r in rounds)
    best_up = jobs / min(r[1] for r in rounds)
    out.append(f"  best of {ROUNDS}: baseline {best_base:.0f} jobs/s, uploader {best_up:.0f} jobs/s")
    out.append(f"ratio={best_up / best_base:.2f}")
    return "\n".join(out)


if __name__ == "__main__":
    print(report())
