"""Shared pieces of the edge agent tests: synthetic hall data, config files, a recording gateway,
the province reference server as a subprocess, and small HTTP helpers.

All personal data here is synthetic: ID numbers are built from an obviously fake sequence with a
computed check character, phones are 139 0000 xxxx.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from edge_agent.idcheck import credit_code_check_char, resident_id_check_char
from edge_agent.intake_client import IntakeClient
from protocol.messages import Record

ROOT = Path(__file__).resolve().parent.parent
HCP = str(ROOT / ".venv" / "bin" / "hcp")
PRIVACY_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
AREA = "371402"
# intake clients every test hall has (synthetic keys): the business system and the queue system
BIZ, QUEUE = "test-biz", "test-queue"
CLIENT_KEYS = {BIZ: bytes(range(0x10, 0x30)), QUEUE: bytes(range(0x30, 0x50))}


def synthetic_id(n: int) -> str:
    """A valid-by-checksum resident ID for a synthetic person born 1990-01-01 (sequence n)."""
    first17 = f"{AREA}19900101{n:03d}"
    return first17 + resident_id_check_char(first17)


def synthetic_credit_code(n: int = 1) -> str:
    first17 = f"11{AREA}MB{n:07d}"
    return first17 + credit_code_check_char(first17)


def synthetic_phone(n: int) -> str:
    return f"1390000{n:04d}"


DEPT_CODE = synthetic_credit_code(1)


def case_body(project_no: str, window: str = "A01", n: int = 1, **over: Any) -> dict:
    """A valid POST /v1/cases body with synthetic applicant n."""
    body = {
        "window": window, "projectNo": project_no, "taskCode": "TEST-TASK-0001",
        "taskName": "测试事项（虚构）", "deptCode": DEPT_CODE, "deptName": "测试局（虚构）",
        "areaCode": AREA, "staff": {"id": "S001", "name": "测试员甲"},
        "applicant": {"name": f"测试{n}号", "certType": "111", "certNo": synthetic_id(n),
                      "phone": synthetic_phone(n), "userProp": 1},
        "acceptedAt": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600 - 900)),
        "finishedAt": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600 - 5)),
        "promiseType": 2, "status": 3,
    }
    body.update(over)
    return body


def rec(rseq: int, level: int = 1, invite_id: int = 0, flags: int = 0, reasons=(),
        t: float | None = None) -> Record:
    """A device record as the firmware sends it."""
    if invite_id == 0:
        flags |= 8
    return Record(rseq, int(t if t is not None else time.time()), invite_id, 1, level, flags,
                  tuple(reasons))


def write_client_keys(tmp: Path) -> None:
    """The test clients' key files (mode 0600, as `hcp agent client add` writes them)."""
    (tmp / "clients").mkdir(exist_ok=True)
    for cid, key in CLIENT_KEYS.items():
        kf = tmp / "clients" / f"{cid}.key"
        kf.write_text(key.hex() + "\n")
        kf.chmod(0o600)


def clients_toml(biz_windows: str = '"*"') -> str:
    """The [[clients]] tables of the test clients (keys from write_client_keys)."""
    return f"""
[[clients]]
id = "{BIZ}"
kind = "business"
key_file = "clients/{BIZ}.key"
windows = [{biz_windows}]
rate_per_min = 6000

[[clients]]
id = "{QUEUE}"
kind = "queue"
key_file = "clients/{QUEUE}.key"
windows = ["*"]
rate_per_min = 6000
"""


def write_config(tmp: Path, *, upstream_url: str = "http://127.0.0.1:9/", profile: str =
                 "gbt39046-json", auth: str = "none", extra_upstream: str = "",
                 alerts: str = "", binding_window_s: int = 600, name: str = "hall.toml",
                 unsolicited: str = "keep", waiting_area: bool = False,
                 biz_windows: str = '"*"', reference_max_age_s: int = 86400) -> Path:
    """A hall.toml for tests: windows A01 (device 1001), A02 (device 1002), A03 (no device);
    `waiting_area` adds the waiting-area evaluator 1003. Clients test-biz (business, windows
    `biz_windows`) and test-queue (queue, every window)."""
    write_client_keys(tmp)
    wa = """
[[devices]]
id = 1003
role = "waiting_area"
link = "serial"
port = "/dev/null"
key_file = "keys/1003.key"
""" if waiting_area else ""
    text = f"""
[hall]
name = "测试大厅（虚构）"
area_code = "{AREA}"
hall_code = "T01"

[agent]
storage = "agent.db"
listen = "127.0.0.1:0"
invite_lifetime_s = 120
binding_window_s = {binding_window_s}

[[windows]]
id = "A01"
name = "一号窗（测试）"

[[windows]]
id = "A02"
name = "二号窗（测试）"

[[windows]]
id = "A03"
name = "无设备窗口（测试）"

[[devices]]
id = 1001
window = "A01"
link = "serial"
port = "/dev/null"
key_file = "keys/1001.key"

[[devices]]
id = 1002
window = "A02"
link = "serial"
port = "/dev/null"
key_file = "keys/1002.key"
{wa}
[binding]
unsolicited = "{unsolicited}"
reference_max_age_s = {reference_max_age_s}

{clients_toml(biz_windows)}
[upstream]
profile = "{profile}"
url = "{upstream_url}"
auth = "{auth}"
timeout_s = 2
data_source = "001"
{extra_upstream}

[alerts]
{alerts}

[privacy]
key = "{PRIVACY_KEY}"
"""
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


class RecordingGateway:
    """A test double of the device side: records INVITE/CANCEL; `offline` devices raise."""

    def __init__(self) -> None:
        self.invites: list[tuple] = []
        self.cancels: list[tuple] = []
        self.offline: set[int] = set()

    async def send_invite(self, device_id: int, invite_id: int, lifetime_s: int, staff_no: str,
                          staff_name: str) -> None:
        if device_id in self.offline:
            raise ConnectionError("device offline")
        self.invites.append((device_id, invite_id, lifetime_s, staff_no, staff_name))

    async def send_cancel(self, device_id: int, invite_id: int) -> None:
        if device_id in self.offline:
            raise ConnectionError("device offline")
        self.cancels.append((device_id, invite_id))


class Province:
    """The project's province reference server, run as `hcp province serve` subprocess."""

    def __init__(self, tmp: Path, profile: str, *args: str) -> None:
        self.db = tmp / f"province-{profile}.sqlite3"
        self.proc = subprocess.Popen(
            [HCP, "province", "serve", "--profile", profile, "--port", "0", "--db",
             str(self.db), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"province server did not start: {line!r} "
                               f"{self.proc.stderr.read()}")
        self.url = line.split(" ", 1)[1]

    def get(self, path: str) -> dict:
        import urllib.request
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self.get("/_stats")

    def records(self) -> dict:
        return self.get("/_records")["records"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


async def wait_for(pred, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll an (async or sync) predicate until truthy; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def upload_tried(h: Any) -> None:
    """Wait until the agent's uploader has tried every job (the province may be absent).
    Stopping an agent the instant its uploader was woken can hang on Python 3.11: the uploader
    sleeps in asyncio.wait_for, which may swallow the cancellation (gh-86296) — an uploader
    matter, noted for its owners; tests that bind a rating and stop at once wait for this."""
    await wait_for(lambda: h.q("SELECT MIN(attempts) FROM outbox") not in ([(0,)], [(None,)]))


async def http_json(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, json=body) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`hcp agent ...` as a subprocess (real process, real exit code)."""
    return subprocess.run([HCP, "agent", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


PY = sys.executable





def fast_tuning(**over: Any):
    """Production logic with short timers, so retry paths run in a test's time."""
    from edge_agent.agent import Tuning
    values = dict(linger_s=0.005, retry_base_s=0.05, retry_cap_s=0.5, breaker_threshold=1000,
                  breaker_cooldown_s=0.5, alert_retry_base_s=0.05, invite_send_timeout_s=5.0,
                  invite_sweep_s=0.05)
    values.update(over)
    return Tuning(**values)


class running_agent:
    """`async with running_agent(cfg_path) as h:` — an Agent with its HTTP API on a free port."""

    def __init__(self, cfg_path: Path, tuning=None, gateway=None) -> None:
        self.cfg_path, self.tuning, self.gateway = cfg_path, tuning, gateway

    async def __aenter__(self) -> "running_agent":
        from aiohttp import web

        from edge_agent.agent import Agent
        from edge_agent.config import load_config
        from edge_agent.http_api import make_app
        self.config = load_config(self.cfg_path)
        self.agent = Agent(self.config, self.tuning or fast_tuning())
        await self.agent.start()
        if self.gateway is not None:
            self.agent.register_gateway(self.gateway)
        self.runner = web.AppRunner(make_app(self.agent), access_log=None,
                                     shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.biz = IntakeClient(self.url, BIZ, CLIENT_KEYS[BIZ])
        self.queue = IntakeClient(self.url, QUEUE, CLIENT_KEYS[QUEUE])
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()
        await self.agent.stop()

    async def post_case(self, body: Any) -> tuple[int, Any]:
        """POST /v1/cases signed as the hall's business system (test-biz)."""
        return await self.biz.post_case(body)

    async def post_event(self, event: Any) -> tuple[int, Any]:
        """POST /v1/queue/events signed as the hall's queue system (test-queue)."""
        return await self.queue.post_event(event)

    async def get_case(self, project_no: str) -> tuple[int, Any]:
        return await http_json("GET", self.url + "/v1/cases/" + project_no)

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.agent.reader().execute(sql, params).fetchall()


APP_MARK = "TESTHALL01"
APP_WORD = "synthetic-app-word"


class NationalKeys:
    """Synthetic SM2 key files for the national envelope: the hall's pair and the platform's
    pair, written as hex under `tmp/keys/`, plus what the agent and the province each need."""

    def __init__(self, tmp: Path) -> None:
        from simulator.province.sm2 import generate_keypair
        keys = tmp / "keys"
        keys.mkdir(exist_ok=True)
        self.hall_private, self.hall_public = generate_keypair()
        self.platform_private, self.platform_public = generate_keypair()
        self.files = {}
        for name, value in (("hall-sm2.key", self.hall_private),
                            ("hall-sm2.pub", self.hall_public),
                            ("platform-sm2.key", self.platform_private),
                            ("platform-sm2.pub", self.platform_public)):
            (keys / name).write_text(value + "\n")
            self.files[name] = keys / name

    def agent_config(self, **sm2: str) -> str:
        """`extra_upstream` for write_config: appMark/appWord and the [upstream.sm2] table."""
        table = {"private_key_file": "keys/hall-sm2.key",
                 "platform_public_key_file": "keys/platform-sm2.pub", **sm2}
        lines = [f'app_mark = "{APP_MARK}"', f'app_word = "{APP_WORD}"', "", "[upstream.sm2]"]
        lines += [f'{k} = "{v}"' for k, v in table.items()]
        return "\n".join(lines)

    def server_args(self, *extra: str) -> tuple[str, ...]:
        """`hcp province serve` options for the platform's side."""
        return ("--app-mark", APP_MARK, "--app-word", APP_WORD, "--sm2-key",
                str(self.files["platform-sm2.key"]), "--sm2-hall-public-key",
                str(self.files["hall-sm2.pub"]), *extra)
