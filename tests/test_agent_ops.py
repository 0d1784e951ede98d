"""Operations and privacy: JSON logs, metrics, status, export, the CLI, `hcp agent run` under a
fake systemd notify socket — and no rater data in any of them."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import signal
import socket
import subprocess
import time

from edge_agent.intake_client import IntakeClient
from edge_agent.logs import setup_logging
from tests.agent_support import (BIZ, CLIENT_KEYS, HCP, Province, RecordingGateway, case_body, http_json, rec,
                                 run_cli, running_agent, synthetic_id, synthetic_phone, wait_for,
                                 write_config)

SECRETS_OF = lambda n: (synthetic_id(n), synthetic_phone(n), f"测试{n}号")  # noqa: E731


def _assert_clean(text: str, ns=range(1, 12)) -> None:
    for n in ns:
        for secret in SECRETS_OF(n):
            assert secret not in text, f"rater data leaked: {secret[:3]}…"


def test_pii_absent_from_logs_metrics_status_exports(tmp_path):
    server = Province(tmp_path, "zj-offlinereport-form")
    # a webhook on a closed port: alerts retry and log failures (the failure path logs too)
    cfg = write_config(tmp_path, upstream_url=server.url, profile="zj-offlinereport-form",
                       alerts='webhook_url = "http://127.0.0.1:9/alerts"',
                       extra_upstream='dept_number = "ZJ-DEPT-0001"')
    buf = io.StringIO()
    handler = setup_logging("debug", buf)
    gw = RecordingGateway()
    outputs: list[str] = []

    async def scenario():
        async with running_agent(cfg, gateway=gw) as h:
            for n in range(1, 9):
                status, reply = await h.post_case(case_body(f"P-PII-{n}", n=n))
                assert status == 201
                inv = reply["invitations"][0]["inviteId"]
                level = 4 if n % 3 == 0 else 2
                await h.agent.ingest(1001, [rec(n, level=level, invite_id=inv,
                                                reasons=(207,) if level == 4 else ())],
                                     time.time())
            # one the province rejects (差评 without reason): its parked reason is shown too
            status, reply = await h.post_case(case_body("P-PII-9", n=9))
            await h.agent.ingest(1001, [rec(9, level=5,
                                            invite_id=reply["invitations"][0]["inviteId"])],
                                 time.time())
            # and a bad intake carrying an ID number
            await h.post_case(case_body("P-PII-10", n=10, deptCode="bad"))
            await wait_for(lambda: dict(h.q("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
                           == {"done": 8, "parked": 1}, timeout=20)
            for path in ("/metrics", "/v1/status", "/v1/devices", "/v1/ratings/unbound",
                         "/v1/cases/P-PII-3", "/v1/cases/P-PII-9", "/openapi.json"):
                status, body = await http_json("GET", h.url + path)
                assert status == 200, path
                outputs.append(body if isinstance(body, str) else json.dumps(body,
                                                                             ensure_ascii=False))
            _, case3 = await h.get_case("P-PII-3")
            assert case3["applicant"]["certNo"] == synthetic_id(3)[:4] + "*" * 10 + \
                synthetic_id(3)[-4:]
    try:
        asyncio.run(scenario())
        # the province did get the real cert number and name (the zj profile needs them)
        rec3 = server.records()["T01-1001-3"]["fields"]
        assert rec3["certkeyGOV"].startswith(synthetic_id(3)[:4]) and "*" in rec3["certkeyGOV"]
        assert server.stats()["accepted"] == 8
    finally:
        server.close()
        logging.getLogger("edge_agent").removeHandler(handler)
        logging.getLogger("aiohttp").removeHandler(handler)
    logs = buf.getvalue()
    assert "records stored" in logs and "upload rejected, parked" in logs
    assert "alert not delivered" in logs
    for line in logs.splitlines():
        json.loads(line)  # one JSON object per line
    _assert_clean(logs)
    for text in outputs:
        _assert_clean(text)

    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))
    for args in (("status",), ("status", "--json"), ("devices",), ("outbox", "list"),
                 ("outbox", "list", "--failed", "--json"), ("unbound",),
                 ("export", "--from", day, "--to", day),
                 ("export", "--from", day, "--to", day, "--format", "json")):
        r = run_cli(*args, "--config", str(cfg))
        assert r.returncode == 0, (args, r.stderr)
        _assert_clean(r.stdout + r.stderr)
        outputs.append(r.stdout)
    rows = list(csv.DictReader(io.StringIO(outputs[-2])))
    assert len(rows) == 9
    row3 = [r for r in rows if r["ratingId"] == "T01-1001-3"][0]
    assert row3["raterCertNo"] == synthetic_id(3)[:4] + "**********" + synthetic_id(3)[-4:]
    assert row3["raterPhone"] == synthetic_phone(3)[:3] + "****" + synthetic_phone(3)[-4:]
    assert row3["raterName"] == "测***" and row3["projectNo"] == "P-PII-3"
    assert row3["upload"] == "done" and row3["level"] == "4"
    assert len(json.loads(outputs[-1])) == 9
    # nothing outside the day
    r = run_cli("export", "--from", "2020-01-01", "--to", "2020-01-02", "--format", "json",
                "--config", str(cfg))
    assert json.loads(r.stdout) == []
    r = run_cli("export", "--from", "yesterday", "--to", day, "--config", str(cfg))
    assert r.returncode == 2


def test_agent_run_subprocess_sd_notify_json_logs(tmp_path):
    cfg = write_config(tmp_path)   # listen on port 0: `status` finds the agent all the same
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(15)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([HCP, "agent", "run", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        url = line.split(" ", 1)[1]
        messages = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in messages)

        async def talk():
            status, body = await http_json("GET", url + "/healthz")
            assert status == 200 and body["ok"]
            biz = IntakeClient(url, BIZ, CLIENT_KEYS[BIZ])
            status, body = await biz.post_case(case_body("P-RUN-1", n=11))
            assert status == 201 and body["invitations"][0]["state"] == "waiting"
        asyncio.run(talk())
        r = run_cli("status", "--config", str(cfg))
        assert r.returncode == 0 and "running" in r.stdout, r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        sock.close()
    assert proc.returncode == 0
    r = run_cli("status", "--config", str(cfg))
    assert r.returncode == 0 and "not reachable" in r.stdout, r.stdout
    lines = [json.loads(x) for x in err.splitlines() if x.strip()]
    assert any(x["msg"] == "case received" and x["projectNo"] == "P-RUN-1" for x in lines)
    assert any(x["msg"] == "stopped" for x in lines)
    _assert_clean(err + out)
