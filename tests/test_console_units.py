"""Console parts without a browser: the route table, working-day deadlines across Chinese
holidays, argon2 accounts and the CLI, the robot alert formats, `[console]` configuration."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import time
import urllib.parse

import pytest
from aiohttp import web

from edge_agent.alerts import RobotTargets, robot_markdown, robot_request
from edge_agent.config import ConfigError, load_config
from edge_agent.console import accounts, routes, views
from edge_agent.console.workdays import add_workdays
from edge_agent.store import open_database
from tests.agent_support import (RecordingGateway, case_body, rec, run_cli, running_agent,
                                 synthetic_id, synthetic_phone, wait_for)
from tests.console_support import console_config


def test_route_table_paths_views_and_roles():
    """Every path → view → roles, as the access middleware reads them (Datasette's
    test_routes): a changed path or a widened role shows up here."""
    table = {(r.method, r.path): (r.view, r.roles) for r in routes.ROUTES}
    sup, tech, win = "supervisor", "technician", "window"
    expect = {
        ("GET", "/login"): (views.login_page, None),
        ("POST", "/login"): (views.login_submit, None),
        ("GET", "/overview" + routes.JSON): (views.overview, (sup, win)),
        ("GET", "/stats" + routes.EXPORTS): (views.stats, (sup, win)),
        ("GET", "/worklist/" + routes.GID + routes.JSON): (views.bad_rating, (sup, win)),
        ("POST", "/worklist/" + routes.GID + "/followup"): (views.followup_submit, (sup,)),
        ("POST", "/worklist/" + routes.GID + "/appeal"): (views.appeal_submit, (win,)),
        ("POST", "/paper/{fid:[0-9]+}/check"): (views.paper_check, (sup,)),
        ("GET", "/devices" + routes.JSON): (views.devices, (sup, tech)),
        ("POST", "/devices/retry"): (views.retry_uploads, (sup, tech)),
        ("GET", "/audit" + routes.JSON): (views.audit_page, (sup,)),
        ("POST", "/users"): (views.user_add, (sup,)),
    }
    for key, value in expect.items():
        assert table[key] == value, key
    # technicians never reach a page with rater data
    for r in routes.ROUTES:
        if r.name in ("bad_rating", "stats", "worklist", "overview", "paper", "paper_scan"):
            assert tech not in (r.roles or ()), r.name
    assert len({r.name for r in routes.ROUTES}) == len(routes.ROUTES)
    # the paths resolve as meant, including global ids with dashes and the .json twin
    app = web.Application()
    routes.add_routes(app)

    async def resolve(method, path):
        req = _FakeReq(method, path)
        return await app.router.resolve(req)
    for method, path, name, info in [
            ("GET", "/worklist/T01-1001-42", "bad_rating", {"gid": "T01-1001-42", "ext": ""}),
            ("GET", "/worklist/T01-1001-42.json", "bad_rating",
             {"gid": "T01-1001-42", "ext": ".json"}),
            ("GET", "/worklist/T01-P-7", "bad_rating", {"gid": "T01-P-7", "ext": ""}),
            ("GET", "/stats.xlsx", "stats", {"ext": ".xlsx"}),
            ("GET", "/stats.csv", "stats", {"ext": ".csv"}),
            ("POST", "/worklist/T01-1001-42/appeal/3", "appeal_decide",
             {"gid": "T01-1001-42", "aid": "3"})]:
        m = asyncio.run(resolve(method, path))
        assert m.route.name == name, path
        assert dict(m) == info, path


class _FakeReq:
    """Just what aiohttp's router reads (method, rel_url) to resolve a path."""

    def __init__(self, method, path):
        from yarl import URL
        self.method = method
        self.rel_url = URL(path)
        self.url = self.rel_url


def test_deadline_counts_working_days_across_national_day():
    # 2026-09-30 (Wed): Oct 1-7 are the National Day holiday, Sat Oct 10 is an adjusted
    # working day (调休), so the 5th working day is Tue Oct 13, not Wed Oct 7
    d = add_workdays(dt.date(2026, 9, 30), 5)
    assert d.day == dt.date(2026, 10, 13) and d.certain
    # an ordinary week
    assert add_workdays(dt.date(2026, 12, 1), 5).day == dt.date(2026, 12, 8)
    # a year the calendar does not know yet: Monday-Friday, and it says so
    d = add_workdays(dt.date(2026, 12, 28), 5)
    assert d.day == dt.date(2027, 1, 4) and not d.certain


def test_accounts_argon2_and_cli(tmp_path):
    cfg = console_config(tmp_path)
    env = {"HCP_CONSOLE_PASSWORD": "first-pass-1"}
    r = run_cli("user", "add", "zhang", "--role", "window", "--window", "A01", "--staff-id",
                "S001", "--name", "张三", "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("user", "add", "zhang", "--role", "window", "--window", "A01", "--config",
                str(cfg), env=env)
    assert r.returncode == 1 and "exists" in r.stderr
    r = run_cli("user", "add", "xx", "--role", "window", "--window", "B99", "--config", str(cfg),
                env=env)
    assert r.returncode == 1 and "B99" in r.stderr
    r = run_cli("user", "add", "li", "--role", "supervisor", "--config", str(cfg),
                env={"HCP_CONSOLE_PASSWORD": "short"})
    assert r.returncode == 1 and "8" in r.stderr
    storage = load_config(cfg).storage
    db = open_database(storage)
    try:
        stored = db.execute("SELECT password_hash FROM console_users WHERE username = 'zhang'"
                            ).fetchone()[0]
        assert stored.startswith("$argon2id$") and "first-pass-1" not in stored
        assert accounts.verify(db, "zhang", "first-pass-1")["window"] == "A01"
        assert accounts.verify(db, "zhang", "wrong-pass-1") is None
    finally:
        db.close()
    r = run_cli("user", "passwd", "zhang", "--config", str(cfg),
                env={"HCP_CONSOLE_PASSWORD": "second-pass-2"})
    assert r.returncode == 0, r.stderr
    r = run_cli("user", "disable", "zhang", "--config", str(cfg))
    assert r.returncode == 0
    db = open_database(storage)
    try:
        assert accounts.verify(db, "zhang", "second-pass-2") is None      # disabled
        accounts.set_disabled(db, "zhang", False)
        assert accounts.verify(db, "zhang", "second-pass-2") is not None
    finally:
        db.close()
    r = run_cli("user", "list", "--json", "--config", str(cfg))
    assert json.loads(r.stdout)[0]["username"] == "zhang"
    assert "hash" not in r.stdout


def test_console_config_keys(tmp_path):
    cfg = console_config(tmp_path, workdays=7)
    c = load_config(cfg).console
    assert c.listen_port == 0 and c.followup_workdays == 7
    assert c.public_url == "http://console.hall.test:8471"
    assert c.scans_dir == str(tmp_path / "paper-scans")
    for bad, key in (("followup_workdays = 0", "console.followup_workdays"),
                     ('listen = "nowhere"', "console.listen")):
        text = cfg.read_text().replace("followup_workdays = 7", bad) if "workdays" in bad else \
            cfg.read_text().replace('listen = "127.0.0.1:0"\nfollowup', bad + "\nfollowup")
        p = tmp_path / "bad.toml"
        p.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as e:
            load_config(p)
        assert e.value.key == key
    # without [console] no console is served
    plain = tmp_path / "plain.toml"
    plain.write_text(cfg.read_text().split("[console]")[0], encoding="utf-8")
    assert load_config(plain).console is None


PAYLOAD = {"type": "bad_rating", "ratingId": "T01-1001-1", "window": "A01",
           "windowName": "一号窗（测试）", "level": 5, "levelName": "非常不满意",
           "reasons": [107, 101], "reasonNames": ["服务态度差、不耐烦", "办理时间长、效率低"],
           "time": "2026-12-02T10:00:00+08:00", "projectNo": "P-1",
           "staff": {"id": "S001", "name": "测试员甲"}, "taskName": "测试事项（虚构）",
           "link": "http://console.hall.test:8471/worklist/T01-1001-1"}


def test_robot_message_formats():
    _, wecom = robot_markdown(PAYLOAD, wecom=True)
    for text in ("非常不满意", "一号窗（测试）", "S001 测试员甲", "服务态度差、不耐烦；办理时间长、效率低",
                 "P-1", "[在差评工作台处理](http://console.hall.test:8471/worklist/T01-1001-1)"):
        assert text in wecom
    assert '<font color="warning">' in wecom
    url, body = robot_request("wecom", RobotTargets(wecom="http://127.0.0.1:9/send?key=k"),
                              PAYLOAD)
    msg = json.loads(body)
    assert url.endswith("key=k") and msg["msgtype"] == "markdown"
    assert set(msg["markdown"]) == {"content"}
    # DingTalk 加签: timestamp + "\n" + secret, HMAC-SHA256 keyed by the secret, Base64, URL-encoded
    url, body = robot_request("dingtalk", RobotTargets(
        dingtalk="http://127.0.0.1:9/robot/send?access_token=t", dingtalk_secret="SECtest"),
        PAYLOAD, now_ms=1700000000000)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    want = base64.b64encode(hmac.new(b"SECtest", b"1700000000000\nSECtest",
                                     hashlib.sha256).digest()).decode()
    assert q["timestamp"] == ["1700000000000"] and q["sign"] == [want]
    msg = json.loads(body)
    assert msg["msgtype"] == "markdown" and msg["markdown"]["title"] == "差评提醒"
    assert "<font" not in msg["markdown"]["text"]
    # a line break or link syntax inside a field cannot forge lines or links
    _, text = robot_markdown({**PAYLOAD, "taskName": "x\n> 伪造行 [点我](http://evil.test)"},
                             wecom=False)
    assert "\n> 伪造行" not in text and "](http://evil.test)" not in text


class Robot:
    """A group robot endpoint as WeCom/DingTalk run it: errcode 0 = delivered; the first
    `refuse` messages get errcode 45009 (rate limited) with HTTP 200."""

    def __init__(self, refuse: int = 0) -> None:
        self.got: list[tuple[str, dict]] = []
        self.refuse = refuse

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refuse > 0:
            self.refuse -= 1
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        self.got.append((str(request.rel_url), body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"


def test_bad_rating_reaches_wecom_and_dingtalk_robots_with_reason_names(tmp_path):
    wecom, ding, hook = Robot(refuse=1), Robot(), Robot()

    async def scenario():
        base_w, base_d, base_h = await wecom.start(), await ding.start(), await hook.start()
        cfg = console_config(tmp_path, alerts=(
            f'webhook_url = "{base_h}/hook"\n'
            f'wecom_webhook = "{base_w}/cgi-bin/webhook/send?key=test-key"\n'
            f'dingtalk_webhook = "{base_d}/robot/send?access_token=test-token"\n'
            'dingtalk_secret = "SECtest"'))
        try:
            async with running_agent(cfg, gateway=RecordingGateway()) as h:
                _, reply = await h.post_case(case_body("P-ROBOT", n=2))
                inv = reply["invitations"][0]["inviteId"]
                await h.agent.ingest(1001, [rec(1, level=5, invite_id=inv, reasons=(107,))],
                                     time.time())
                await wait_for(lambda: wecom.got and ding.got and hook.got, timeout=15)
                await wait_for(lambda: h.q("SELECT target, state, attempts FROM alerts ORDER BY"
                                           " target") == [("dingtalk", "done", 1),
                                                          ("webhook", "done", 1),
                                                          ("wecom", "done", 2)], timeout=10)
        finally:
            for r in (wecom, ding, hook):
                await r.runner.cleanup()
    asyncio.run(scenario())
    _, w = wecom.got[0]
    assert "key=test-key" in wecom.got[0][0]
    assert "服务态度差、不耐烦" in w["markdown"]["content"]
    assert "/worklist/T01-1001-1" in w["markdown"]["content"]
    url, d = ding.got[0]
    assert "timestamp=" in url and "sign=" in url
    assert "服务态度差、不耐烦" in d["markdown"]["text"]
    generic = hook.got[0][1]
    assert generic["reasons"] == [107] and generic["reasonNames"] == ["服务态度差、不耐烦"]
    assert generic["link"] == "http://console.hall.test:8471/worklist/T01-1001-1"
    for _, body in wecom.got + ding.got + hook.got:
        text = json.dumps(body, ensure_ascii=False)
        assert synthetic_id(2) not in text and synthetic_phone(2) not in text
        assert "测试2号" not in text


def test_vendored_browser_libraries_match_the_pinned_npm_packages():
    """static/vendor/ is what package.json pins: the agent serves these, never a CDN."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    pkg = json.loads((root / "package.json").read_text())["dependencies"]
    assert pkg["echarts"] == "6.1.0" and pkg["htmx.org"] == "2.0.11"
    nm = root / "node_modules"
    if not nm.exists():
        pytest.skip("node_modules not installed (make setup)")
    vendor = root / "edge_agent" / "console" / "static" / "vendor"
    for ours, theirs in (("echarts.simple.min.js", "echarts/dist/echarts.simple.min.js"),
                         ("htmx.min.js", "htmx.org/dist/htmx.min.js")):
        assert (vendor / ours).read_bytes() == (nm / theirs).read_bytes(), ours
    assert os.path.getsize(vendor / "echarts.simple.min.js") > 100_000
