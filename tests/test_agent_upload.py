"""Uploads to the project's province reference server over real HTTP, per profile, with faults.

Invariant checked each time: every bound rating is confirmed exactly once upstream (accepted
count = ratings, one record per global id), duplicates seen by the server only where a response
was lost, and nothing is marked done that the server did not confirm.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.agent_support import (Province, RecordingGateway, case_body, fast_tuning, rec,
                                 run_cli, running_agent, wait_for, write_config)


@pytest.fixture
def province(tmp_path):
    servers = []

    def start(profile, *args):
        p = Province(tmp_path, profile, *args)
        servers.append(p)
        return p
    yield start
    for p in servers:
        p.close()


async def _all_done(h, n):
    rows = h.q("SELECT state, COUNT(*) FROM outbox GROUP BY state")
    return dict(rows).get("done", 0) == n


async def _rate_cases(h, gw, count, start=1, levels=(1, 2, 3, 4, 5), project="P"):
    """`count` cases on A01, each rated through its invitation; returns global ids."""
    ids = []
    for i in range(start, start + count):
        status, reply = await h.post_case(case_body(f"{project}-{i:04d}", n=i))
        assert status == 201, reply
        inv = reply["invitations"][0]["inviteId"]
        level = levels[(i - start) % len(levels)]
        reasons = (200 + i % 10,) if level >= 4 else ()
        r = await h.agent.ingest(1001, [rec(i, level=level, invite_id=inv, reasons=reasons)],
                                 time.time())
        assert r.new == [i]
        ids.append(f"T01-1001-{i}")
    return ids


@pytest.mark.parametrize("profile,auth,server_args,extra", [
    ("gbt39046-json", "hmac", ("--auth", "hmac", "--app-id", "TEST-APP", "--secret", "s3cret-test"),
     'app_id = "TEST-APP"\napp_secret = "s3cret-test"'),
    ("zj-offlinereport-form", "token", ("--auth", "token", "--token", "tok-test-123"),
     'token = "tok-test-123"\ndept_number = "ZJ-DEPT-0001"'),
    ("sd-epoint-json", "none", ("--province-prefix", "37"), ""),
])
def test_upload_per_profile_with_level_mapping(tmp_path, province, profile, auth, server_args,
                                               extra):
    server = province(profile, *server_args)
    cfg = write_config(tmp_path, upstream_url=server.url, profile=profile, auth=auth,
                       extra_upstream=extra)
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(cfg, gateway=gw) as h:
            ids = await _rate_cases(h, gw, 5)
            # a 差评 whose reason screen timed out: uploaded with a written note, not a made-up tag
            status, reply = await h.post_case(case_body("P-TIMEOUT", n=9))
            inv = reply["invitations"][0]["inviteId"]
            await h.agent.ingest(1001, [rec(50, level=5, invite_id=inv, flags=2)], time.time())
            ids.append("T01-1001-50")
            await wait_for(lambda: _all_done(h, 6))
            return ids
    ids = asyncio.run(scenario())
    stats = server.stats()
    assert stats["accepted"] == 6 and stats["duplicates"] == 0 and stats["rejected"] == {}
    records = server.records()
    assert set(records) == set(ids)
    for i, gid in enumerate(ids[:5]):
        level = i + 1
        assert records[gid]["level"] == level  # the server's GB/T 39046 view
        fields = records[gid]["fields"]
        if profile == "gbt39046-json":
            assert fields["levelCode"] == level and fields["channel"] == "政务大厅其他终端"
        else:
            assert int(fields["satisfaction"]) == 6 - level  # 5 = 非常满意 upstream
            # pf: 5 (政务大厅其他终端) for zj; the Shandong platform's window endpoint uses 4
            assert str(fields["pf"]) == ("4" if profile == "sd-epoint-json" else "5")
        if level >= 4:
            tags = fields["evalDetail"]
            assert tags == [str(200 + (i + 1) % 10)] or tags == str(200 + (i + 1) % 10)
    assert records["T01-1001-50"]["level"] == 5
    if profile == "sd-epoint-json":
        # the service record went first, once per case; the case number carries the prefix
        assert stats["services"] == 6 and stats["service_duplicates"] == 0
        first = records[ids[0]]["fields"]
        assert first["projectno"] == "37P-0001" and first["serviceNumber"] == 1
        assert first["winNo"] == "A01" and first["winName"] == "一号窗（测试）"
    assert "原因选择超时" in records["T01-1001-50"]["fields"]["writingEvaluation"]


def test_faults_5xx_timeout_lost_response_no_duplicates(tmp_path, province):
    server = province("gbt39046-json", "--fail-rate", "0.3", "--timeout-rate", "0.1",
                      "--hold-seconds", "20", "--drop-response-rate", "0.25", "--seed", "7")
    cfg = write_config(tmp_path, upstream_url=server.url,
                       extra_upstream="").read_text().replace("timeout_s = 2", "timeout_s = 1")
    (tmp_path / "hall.toml").write_text(cfg, encoding="utf-8")
    gw = RecordingGateway()
    n = 24

    async def scenario():
        async with running_agent(tmp_path / "hall.toml", gateway=gw) as h:
            await _rate_cases(h, gw, n)
            await wait_for(lambda: _all_done(h, n), timeout=60)
            results = dict(h.agent.uploader.results)
            return results
    results = asyncio.run(scenario())
    stats = server.stats()
    faults = stats["faults"]
    assert faults.get("fail", 0) > 0 and faults.get("drop", 0) > 0 and faults.get("timeout", 0) > 0
    assert stats["accepted"] == n
    assert len(server.records()) == n
    # Every stored-but-unanswered upload must be resent (the agent cannot know it was stored),
    # and the province answers those duplicates as success. A reply slower than the client
    # timeout on a busy machine is a lost reply too, so this is a lower bound, not equality.
    assert stats["duplicates"] >= faults["drop"]
    assert results["retry"] >= faults["fail"] + faults["timeout"] + faults["drop"]


def test_429_retry_after_honoured(tmp_path, province):
    server = province("sd-epoint-json", "--rate-limit", "3", "--province-prefix", "37")
    cfg = write_config(tmp_path, upstream_url=server.url, profile="sd-epoint-json")
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(cfg, gateway=gw) as h:
            await _rate_cases(h, gw, 8)
            await wait_for(lambda: _all_done(h, 8), timeout=30)
            assert h.agent.uploader.breaker == "closed"
    asyncio.run(scenario())
    stats = server.stats()
    assert stats["faults"].get("rate_limited", 0) > 0
    assert stats["accepted"] == 8 and stats["duplicates"] == 0


def test_outage_503_retry_after_then_recovers(tmp_path, province):
    server = province("zj-offlinereport-form", "--outage", "0:2")
    cfg = write_config(tmp_path, upstream_url=server.url, profile="zj-offlinereport-form",
                       extra_upstream='dept_number = "ZJ-DEPT-0001"')
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(cfg, gateway=gw) as h:
            await _rate_cases(h, gw, 3)
            await wait_for(lambda: _all_done(h, 3), timeout=30)
    asyncio.run(scenario())
    stats = server.stats()
    assert stats["faults"].get("outage", 0) > 0
    assert stats["accepted"] == 3 and stats["duplicates"] == 0


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_upstream_opens_breaker_then_recovers(tmp_path, province):
    port = _free_port()
    cfg = write_config(tmp_path, upstream_url=f"http://127.0.0.1:{port}",
                       profile="gbt39046-json")
    gw = RecordingGateway()

    async def scenario():
        tuning = fast_tuning(breaker_threshold=2, breaker_cooldown_s=0.3)
        async with running_agent(cfg, tuning=tuning, gateway=gw) as h:
            await _rate_cases(h, gw, 3)
            await wait_for(lambda: h.agent.uploader.breaker == "open", timeout=10)
            # visible while it lasts: status and metrics
            from tests.agent_support import http_json
            _, st = await http_json("GET", h.url + "/v1/status")
            assert st["upstream"]["breaker"] in ("open", "half-open")
            assert st["outbox"]["pending"] == 3 and st["upstream"]["lastError"]
            _, text = await http_json("GET", h.url + "/metrics")
            assert "hcp_outbox_depth 3" in text
            # the province comes up (on the configured port): everything goes, once
            server = await asyncio.to_thread(province, "gbt39046-json", "--port", str(port))
            await wait_for(lambda: _all_done(h, 3), timeout=30)
            assert h.agent.uploader.breaker == "closed"
            _, text = await http_json("GET", h.url + "/metrics")
            assert "hcp_upstream_circuit_open 0" in text
            assert 'hcp_outbox_jobs{state="done"} 3' in text
            return server
    server = asyncio.run(scenario())
    stats = server.stats()
    assert stats["accepted"] == 3 and stats["duplicates"] == 0


def test_rejections_parked_then_retried_after_fix(tmp_path, province):
    server = province("zj-offlinereport-form", "--auth", "token", "--token", "right-token")
    cfg = write_config(tmp_path, upstream_url=server.url, profile="zj-offlinereport-form",
                       auth="token", extra_upstream='token = "wrong-token"\n'
                                                    'dept_number = "ZJ-DEPT-0001"')
    gw = RecordingGateway()

    async def first():
        async with running_agent(cfg, gateway=gw) as h:
            await _rate_cases(h, gw, 2)
            # a 差评 without any reason (and no timeout flag): the province refuses it for good
            status, reply = await h.post_case(case_body("P-NOREASON", n=5))
            inv = reply["invitations"][0]["inviteId"]
            await h.agent.ingest(1001, [rec(30, level=4, invite_id=inv)], time.time())
            await wait_for(lambda: dict(h.q("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
                           .get("parked") == 3)
    asyncio.run(first())
    r = run_cli("outbox", "list", "--failed", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout.count("parked") == 3
    assert "auth_failed" in r.stdout
    assert server.stats()["accepted"] == 0

    # the technician fixes the token, restarts, and releases the parked jobs
    cfg.write_text(cfg.read_text().replace("wrong-token", "right-token"), encoding="utf-8")
    r = run_cli("outbox", "retry", "--all", "--config", str(cfg))
    assert r.returncode == 0 and "released 3" in r.stdout

    async def second():
        async with running_agent(cfg, gateway=gw) as h:
            await wait_for(lambda: _all_done(h, 2))
            await wait_for(lambda: dict(h.q("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
                           .get("parked") == 1)
            reason = h.q("SELECT last_error FROM outbox WHERE state = 'parked'")[0][0]
            assert reason.startswith("bad_reason_missing")
    asyncio.run(second())
    stats = server.stats()
    assert stats["accepted"] == 2 and stats["duplicates"] == 0
    r = run_cli("outbox", "retry", "999", "--config", str(cfg))
    assert r.returncode == 1
