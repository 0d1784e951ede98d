"""The console over real HTTP on loopback, asserting on parsed HTML and the `.json` twins:
every page for every role, CSRF, login throttling, window scope and appeals, exports (openpyxl),
paper forms (four eyes), devices and the retry button, statistics rollups, the audit log.
The agent, its SQLite database and the console app are the real ones."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import struct
import zlib

import aiohttp
import pytest
from openpyxl import load_workbook

from edge_agent.console import paper as paper_mod
from tests.agent_support import Province, synthetic_id, synthetic_phone
from tests.console_support import (PASSWORD, STAFF_A, TASK_A, Client, parse_html,
                                   seeded_hall)

PAGES = ("/overview", "/stats", "/worklist", "/paper", "/devices", "/audit", "/users")
# role -> pages it may open (everything else is 403)
ALLOWED = {"sup": set(PAGES), "tech": {"/devices"},
           "win1": {"/overview", "/stats", "/worklist"}}
HEADINGS = {"/overview": "总览", "/stats": "统计", "/worklist": "差评工作台", "/paper": "纸质评价",
            "/devices": "设备", "/audit": "审计", "/users": "账号"}


def _rater_secrets(n_max: int = 20) -> list[str]:
    out = []
    for n in range(1, n_max):
        sid, phone = synthetic_id(n), synthetic_phone(n)
        out += [sid, phone, f"测试{n}号", sid[:4] + "*" * 10 + sid[-4:],
                phone[:3] + "****" + phone[-4:]]
    return out


def _no_rater_data(text: str) -> None:
    for secret in _rater_secrets():
        assert secret not in text, f"rater data on the page: {secret[:4]}…"


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-http")
    province = Province(tmp, "gbt39046-json")
    try:
        h = seeded_hall(tmp, upstream_url=province.url)
    except BaseException:
        province.close()
        raise
    h.province = province
    try:
        yield h
    finally:
        h.stop()
        province.close()


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("user", sorted(ALLOWED))
def test_every_page_for_every_role(hall, user):
    async def go():
        async with Client(hall.console_url) as c:
            assert await c.login(user) == 303
            for path in PAGES:
                status, html = await c.get(path)
                if path not in ALLOWED[user]:
                    assert status == 403, (user, path)
                    assert "无权" in parse_html(html).find("p", cls="error").text()
                    status, body = await c.get(path + ".json")
                    assert status == 403 and "error" in json.loads(body), (user, path)
                    continue
                assert status == 200, (user, path)
                doc = parse_html(html)
                assert doc.find("h1").text().startswith(HEADINGS[path])
                assert doc.find("html").attrs["lang"] == "zh-CN"
                nav = [a.text() for a in doc.find("nav").find_all("a")]
                assert HEADINGS[path] in nav
                # every form on every page carries this session's CSRF token
                for form in doc.find_all("form", method="post"):
                    assert form.find("input", name="csrf").attrs["value"] == c.csrf, path
                if user != "sup":
                    _no_rater_data(html)
                status, body = await c.get(path + ".json")
                assert status == 200 and isinstance(json.loads(body), dict)
                if user != "sup":
                    _no_rater_data(body)
            # a technician's pages hold no rater data even in JSON
            if user == "tech":
                for gid in hall.ids["bad_A01"]:
                    status, _ = await c.get(f"/worklist/{gid}.json")
                    assert status == 403
    run(go())


def test_overview_page_and_json_twin_agree(hall):
    async def go():
        async with Client(hall.console_url) as c:
            await c.login("sup")
            _, body = await c.get("/overview.json")
            data = json.loads(body)
            _, html = await c.get("/overview")
            return data, parse_html(html)
    data, doc = run(go())
    today = data["periods"][0]
    # today: A01 1,1,2,3,4,5 and A02 1,2,5 -> 6 good of 9, 3 差评 (the 09-30 one is not today)
    assert (today["total"], today["good"], today["bad"]) == (9, 6, 3)
    assert today["satisfaction"] == 66.7
    cards = doc.find_all("div", cls="summary")
    assert cards[0].find("h3").text() == "今日"
    assert cards[0].find("span", cls="num").text() == "66.7%"
    assert cards[0].find("dd", cls="bad").text() == "3"
    levels = {tr.find("th").text(): tr.find("td", cls="n").text()
              for tr in cards[0].find("table", cls="levels").find_all("tr")}
    assert levels == {"非常满意": "3", "满意": "2", "基本满意": "1", "不满意": "1", "非常不满意": "2"}
    # follow-ups: 4 差评 open, the one of 2026-09-30 overdue (deadline 2026-10-13)
    assert data["followups"]["open"] == 4 and data["followups"]["overdue"] == 1
    assert doc.find("dd", cls="overdue").text().strip() == "1"
    assert len(data["trend"]) == 30 and data["trend"][-1]["bad"] == 3
    strip = doc.find("table", cls="devices")
    assert "离线" in strip.text()     # no device link in this test: offline with the reason
    assert "从未连接" in strip.text()


def test_window_staff_see_only_their_window(hall):
    async def go():
        async with Client(hall.console_url) as c:
            await c.login("win2")
            _, body = await c.get("/worklist.json")
            items = json.loads(body)["items"]
            assert {i["window"] for i in items} == {"A02"}
            _, body = await c.get("/overview.json")
            assert json.loads(body)["periods"][0]["total"] == 3
            _, body = await c.get("/stats.json?window=A01")     # cannot widen the scope
            assert {r["window"] for r in json.loads(body)["byWindow"]} == {"A02"}
            other = hall.ids["bad_A01"][0]
            status, html = await c.get(f"/worklist/{other}")
            assert status == 403 and "本窗口" in html
            status, _ = await c.get(f"/worklist/{other}.json")
            assert status == 403
            status, _, _ = await c.post(f"/worklist/{other}/appeal",
                                        {"reason": "不是本窗口的差评也想申诉"})
            assert status == 403
            own = hall.ids["bad_A02"][0]
            status, html = await c.get(f"/worklist/{own}")
            assert status == 200
            doc = parse_html(html)
            assert doc.find("dd", cls="rater").text() == "不向本角色显示"
            _no_rater_data(html)
    run(go())


def test_appeal_by_own_staff_and_review_outcome_never_touch_the_rating(hall):
    gid = hall.ids["bad_A01"][0]
    before = hall.q("SELECT * FROM ratings WHERE global_id = ?", (gid,))

    async def go():
        async with Client(hall.console_url) as win, Client(hall.console_url) as sup:
            await win.login("win1")
            status, loc, _ = await win.post(f"/worklist/{gid}/appeal",
                                            {"reason": "评价人当场表示按错了键，属误评"})
            assert status == 303 and loc == f"/worklist/{gid}"
            _, html = await win.get(loc)
            doc = parse_html(html)
            assert doc.find("div", cls="flash").text() == "已保存"
            assert "已申诉，待复核" in doc.find("ul", cls="appeals").text()
            assert not doc.find_all("form", cls="appeal")     # one open appeal at a time
            # window staff cannot work follow-ups
            status, _, _ = await win.post(f"/worklist/{gid}/followup",
                                          {"state": "called", "note": "x"})
            assert status == 403
            await sup.login("sup")
            _, body = await sup.get(f"/worklist/{gid}.json")
            appeal = json.loads(body)["item"]["appeals"][0]
            status, _, _ = await sup.post(f"/worklist/{gid}/appeal/{appeal['id']}",
                                          {"outcome": "upheld", "note": "省平台复核：属误评"})
            assert status == 303
            _, body = await sup.get(f"/worklist/{gid}.json")
            item = json.loads(body)["item"]
            assert item["appeals"][0]["state"] == "upheld"
            assert item["appeal"] == "复核：申诉成立"
    run(go())
    assert hall.q("SELECT * FROM ratings WHERE global_id = ?", (gid,)) == before


def test_csrf_refused_and_nothing_changes(hall):
    gid = hall.ids["bad_A02"][0]

    async def go():
        async with Client(hall.console_url) as c:
            await c.login("sup")
            for token in ("", "forged-token", None):
                data = {"state": "called", "note": "未带令牌的提交"}
                if token is None:     # a header-less, field-less post
                    status, _, html = await c.post(f"/worklist/{gid}/followup",
                                                   aiohttp.FormData(data))
                else:
                    status, _, html = await c.post(f"/worklist/{gid}/followup", data, csrf=token)
                assert status == 403
                assert "CSRF" in parse_html(html).find("p", cls="error").text()
            # the right token passes
            status, _, _ = await c.post(f"/worklist/{gid}/followup",
                                        {"state": "called", "note": "电话回访，核实属实"})
            assert status == 303
        # the login form without its double-submit cookie
        async with aiohttp.ClientSession() as s:
            async with s.post(hall.console_url + "/login", data={
                    "username": "sup", "password": PASSWORD, "csrf": "x"},
                    allow_redirects=False) as r:
                assert r.status == 403
    run(go())
    assert hall.q("SELECT COUNT(*) FROM followup_events e JOIN ratings r ON r.id = e.rating_id"
                  " WHERE r.global_id = ?", (gid,)) == [(1,)]


def test_session_cookie_flags_and_login_throttle(hall):
    async def go():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.get(hall.console_url + "/login") as r:
                html = await r.text()
            token = parse_html(html).find("input", name="csrf").attrs["value"]
            async with s.post(hall.console_url + "/login", data={
                    "username": "tech", "password": PASSWORD, "csrf": token, "next": "/"},
                    allow_redirects=False) as r:
                assert r.status == 303
                cookie = r.headers.getall("Set-Cookie")
            session = [c for c in cookie if c.startswith("hcp_console=")][0]
            assert "HttpOnly" in session and "SameSite=Strict" in session
            async with s.get(hall.console_url + "/devices") as r:
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        async with Client(hall.console_url) as c:
            for _ in range(5):
                assert await c.login("win2", "wrong-password") == 401
            # blocked now, even with the right password
            assert await c.login("win2") == 429
            # a phone number typed as the user name is not kept in the audit log
            assert await c.login(synthetic_phone(7), "wrong-password") == 401
    run(go())
    assert hall.q("SELECT username FROM console_audit WHERE username LIKE '139%'") == \
        [(synthetic_phone(7)[:3] + "****" + synthetic_phone(7)[-4:],)]
    rows = hall.q("SELECT action, detail FROM console_audit WHERE username = 'win2'"
                  " AND action = 'login_failed'")
    assert len(rows) == 6 and rows[-1][1] == "throttled"


def test_exports_carry_reason_names_and_masked_raters(hall):
    async def go():
        async with Client(hall.console_url) as sup, Client(hall.console_url) as win:
            await sup.login("sup")
            s1, xlsx, h1 = await sup.get_bytes("/stats.xlsx")
            s2, csv_body, h2 = await sup.get_bytes("/stats.csv")
            await win.login("win1")
            s3, win_csv, _ = await win.get_bytes("/stats.csv?window=A02")
            assert (s1, s2, s3) == (200, 200, 200)
            assert "attachment" in h1["Content-Disposition"]
            return xlsx, csv_body, win_csv
    xlsx, csv_body, win_csv = run(go())
    wb = load_workbook(io.BytesIO(xlsx), read_only=True)
    assert {"汇总", "按窗口", "按人员", "按事项", "差评原因", "差评聚集", "评价明细"} <= set(wb.sheetnames)
    rows = list(wb["评价明细"].iter_rows(values_only=True))
    head = rows[0]
    detail = [dict(zip(head, r)) for r in rows[1:]]
    bad = [r for r in detail if r["评价等级"] == "非常不满意" and r["窗口"] == "A01"][0]
    assert bad["差评原因"] == "服务态度差、不耐烦；办理时间长、效率低"
    assert bad["工号"] == "S001" and bad["事项名称"] == TASK_A[1]
    # rater masked: 测*** / 3714**********xxxx / 139****xxxx
    assert "*" in bad["评价人"] and "*" in bad["评价人证件号"] and "****" in bad["评价人电话"]
    for r in detail:
        for v in r.values():
            assert str(v) not in [synthetic_id(n) for n in range(1, 20)]
    reasons = dict(r for r in wb["差评原因"].iter_rows(values_only=True, min_row=2))
    assert reasons["服务态度差、不耐烦"] == 2          # 207 (A01) and 107 (A01)
    staff = [r for r in wb["按人员"].iter_rows(values_only=True)]
    assert staff[0][:3] == ("排名", "工号", "姓名")
    assert {r[1] for r in staff[1:]} == {"S001", "S002"}
    # CSV: UTF-8 BOM so Excel on Chinese Windows reads it, names not codes
    assert csv_body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(csv_body.decode("utf-8-sig"))))
    assert any(r["差评原因"] == "排队等候时间长" for r in rows)      # 102 at A02
    assert not any(c.isdigit() and len(c) == 3 for r in rows for c in r["差评原因"].split("；"))
    # window staff: their window only (the query asked for A02), and no rater columns filled
    rows = list(csv.DictReader(io.StringIO(win_csv.decode("utf-8-sig"))))
    assert rows and {r["窗口"] for r in rows} == {"A01"}
    assert all(r["评价人"] == r["评价人证件号"] == r["评价人电话"] == "" for r in rows)
    audit = hall.q("SELECT username, target FROM console_audit WHERE action = 'export'")
    assert ("sup", "stats.xlsx") in audit and ("win1", "stats.csv") in audit


def _png() -> bytes:
    """A real 1×1 PNG (a stand-in for a phone photo of the form)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_paper_form_four_eyes_audited_and_handed_to_outbox(hall):
    # a case reported but never rated at a device: the paper form is its rating
    status, _ = hall.call(hall.agent.intake_case(_case("P-PAPER-1", 31)))
    assert status == 201

    def form(project_no, level="5", tags=("07",), written="", scan=None):
        fd = aiohttp.FormData()
        from edge_agent.console.queries import hall_day
        import time as _t
        for k, v in (("project_no", project_no), ("level", level),
                     ("rated_on", hall_day(_t.time()).isoformat()),
                     ("written", written)):
            fd.add_field(k, v)
        for t in tags:
            fd.add_field("tag", t)
        fd.add_field("scan", scan if scan is not None else _png(), filename="form.png",
                     content_type="image/png")
        return fd

    async def go():
        async with Client(hall.console_url) as a, Client(hall.console_url) as b:
            await a.login("sup")
            await b.login("sup2")

            async def enter(fd):
                fd.add_field("csrf", a.csrf)
                status, loc, _ = await a.post("/paper", fd)
                assert status == 303
                _, html = await a.get("/paper")
                return parse_html(html).find("div", cls="flash")
            flash = await enter(form("P-NO-SUCH-CASE"))
            assert "无此办件编号" in flash.text()
            flash = await enter(form(hall.ids["A01"][0][0].replace("T01-1001-", "P-SEED-00")))
            assert "已有评价" in flash.text()
            flash = await enter(form("P-PAPER-1", scan=b"not an image"))
            assert "JPEG、PNG 或 PDF" in flash.text()
            flash = await enter(form("P-PAPER-1", tags=()))
            assert "差评须勾选原因" in flash.text()
            flash = await enter(form("P-PAPER-1"))
            assert "已录入" in flash.text()
            fid = hall.q("SELECT id FROM paper_forms WHERE state = 'entered'")[0][0]
            # the one who entered it cannot confirm it
            status, _, _ = await a.post(f"/paper/{fid}/check", {"decision": "confirm"})
            _, html = await a.get("/paper")
            assert "四眼原则" in parse_html(html).find("div", cls="flash").text()
            assert hall.q("SELECT state FROM paper_forms WHERE id = ?", (fid,)) == [("entered",)]
            status, _, _ = await b.post(f"/paper/{fid}/check", {"decision": "confirm"})
            assert status == 303
            _, body = await b.get("/paper.json")
            f = json.loads(body)["forms"][0]
            assert f["state"] == "queued" and f["stateName"] == "已进入上传队列"
            assert f["reasons"] == ["服务态度差、不耐烦"] and f["checkedBy"] == "sup2"
            status, scan, headers = await b.get_bytes(f"/paper/{fid}/scan")
            assert status == 200 and scan == _png() and headers["Content-Type"] == "image/png"
            return fid
    fid = run(go())
    row = hall.q("SELECT scan_file, scan_sha256, level, reasons FROM paper_forms WHERE id = ?",
                 (fid,))[0]
    import hashlib
    from pathlib import Path
    stored = Path(hall.config.console.scans_dir) / row[0]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == row[1]
    assert (row[2], json.loads(row[3])) == (5, [107])
    actions = [r[0] for r in hall.q("SELECT action FROM console_audit WHERE action LIKE"
                                    " 'paper%' ORDER BY id")]
    assert actions == ["paper_entered", "paper_confirmed", "paper_scan_viewed"]
    # confirmed: a bound rating with its upload job, made in the same write as the confirmation
    rid = hall.q("SELECT rating_id FROM paper_forms WHERE id = ?", (fid,))[0][0]
    rating = hall.q("SELECT global_id, device_id, level, reasons, binding, time_source, case_id"
                    " FROM ratings WHERE id = ?", (rid,))[0]
    assert rating[:6] == (f"T01-P-{fid}", 0, 5, "[107]", "paper", "paper")
    # ... and the outbox sends it to the province like a device's rating, once, on the paper
    # channel of the profile's settings
    import time as _t
    deadline = _t.monotonic() + 20
    while hall.q("SELECT state FROM outbox WHERE rating_id = ?", (rid,)) != [("done",)]:
        assert _t.monotonic() < deadline, hall.q("SELECT * FROM outbox WHERE rating_id = ?",
                                                 (rid,))
        _t.sleep(0.1)
    sent = hall.province.records()[f"T01-P-{fid}"]["fields"]
    assert sent["projectNo"] == "P-PAPER-1" and sent["levelCode"] == 5
    assert sent["channel"] == hall.config.upstream.paper_channel == "政务大厅其他终端"
    with pytest.raises(paper_mod.ActionError):      # never twice
        hall.write(lambda db: paper_mod.hand_to_outbox(db, "T01", fid, 1))


def _case(project_no: str, n: int) -> dict:
    from tests.agent_support import case_body
    return case_body(project_no, window="A01", n=n, staff={"id": STAFF_A[0], "name": STAFF_A[1]},
                     taskCode=TASK_A[0], taskName=TASK_A[1])


def test_devices_page_parked_retry_and_unbound(hall):
    from tests.agent_support import rec
    # a 差评 without any reason: the province reference server rejects it -> parked
    status, reply = hall.call(hall.agent.intake_case(_case("P-PARK-1", 41)))
    hall.rseq += 1
    gid = f"T01-1001-{hall.rseq}"
    import time as _t
    hall.call(hall.agent.ingest(1001, [rec(hall.rseq, level=5, invite_id=reply["invitations"][0]
                                           ["inviteId"])], _t.time()))

    async def go():
        deadline = _t.monotonic() + 20
        while not hall.q("SELECT 1 FROM outbox WHERE global_id = ? AND state = 'parked'",
                         (gid,)):
            assert _t.monotonic() < deadline, "the province did not reject"
            await asyncio.sleep(0.1)
        async with Client(hall.console_url) as c:
            await c.login("tech")
            _, html = await c.get("/devices")
            doc = parse_html(html)
            parked = doc.find("table", cls="parked")
            assert gid in parked.text() and parked.find("td", cls="reason").text()
            unbound = doc.find("table", cls="unbound").text()
            assert hall.ids["unbound"] in unbound and "无邀请的按键" in unbound
            assert "大厅环境或设施不便" in unbound or "擅自离岗" in unbound   # reason by name
            _no_rater_data(html)
            job = hall.q("SELECT id, attempts FROM outbox WHERE global_id = ?", (gid,))[0]
            status, _, _ = await c.post("/devices/retry", {"job": str(job[0])})
            assert status == 303
            _, html = await c.get("/devices")
            assert "已重新排队 1 条上传" in parse_html(html).find("div", cls="flash").text()
            # the same core as `hcp agent outbox retry`: released, tried again, parked again
            while hall.q("SELECT attempts FROM outbox WHERE id = ?", (job[0],))[0][0] == job[1]:
                assert _t.monotonic() < deadline + 20
                await asyncio.sleep(0.1)
    run(go())
    assert hall.q("SELECT username, action FROM console_audit WHERE action = 'upload_retry'") \
        == [("tech", "upload_retry")]


def test_statistics_rollups_match_the_live_count(hall):
    async def stats():
        async with Client(hall.console_url) as c:
            await c.login("sup")
            _, body = await c.get("/stats.json?from=2026-09-01&to=2026-12-31&period=month")
            return json.loads(body)
    live = run(stats())
    assert hall.q("SELECT rolled_to FROM stat_mark") == [(0,)]
    # roll everything up (as if the settle time had passed) and ask again
    import time as _t
    from edge_agent.console import rollup
    assert hall.write(lambda db: rollup.roll_forward(db, _t.time() + 3600)) > 0
    rolled = run(stats())
    assert rolled == live
    by_staff = {r["staffId"]: r for r in live["byStaff"]}
    assert by_staff["S001"]["label"] == "S001 测试员甲"
    assert [p["period"] for p in live["byPeriod"]] == ["2026-09", "2026-12"]
    clusters = {(c["taskCode"], c["reasonName"]): c["n"] for c in live["badClusters"]}
    # 207 and 107 of the session, and the paper form's 107 once it was handed over
    assert clusters[(TASK_A[0], "服务态度差、不耐烦")] == 3


def test_device_state_offline_reason_and_last_hello(hall):
    """What a link reports (HELLO, then the port lost) is what the devices page says."""
    hall.call(hall.agent.device_seen(1002, {"online": True, "link": "serial", "session": 4,
                                            "firmware": "0.1.0", "backlog": 3,
                                            "journal_full": False, "clock": True}))
    hall.call(hall.agent.device_seen(1002, {"online": False, "link": "serial",
                                            "offline_reason": "serial_lost: 设备已拔出"}))

    async def go():
        async with Client(hall.console_url) as c:
            await c.login("tech")
            _, body = await c.get("/devices.json")
            _, html = await c.get("/devices")
            return json.loads(body), parse_html(html)
    data, doc = run(go())
    d = {x["deviceId"]: x for x in data["devices"]}[1002]
    assert d["online"] is False and d["offlineReason"] == "串口连接中断：设备已拔出"
    assert d["firmware"] == "0.1.0" and d["backlog"] == 3 and d["lastHello"]
    row = [tr for tr in doc.find("table", cls="devices").find_all("tr", cls="offline")
           if tr.find("td").text() == "1002"][0]
    assert "串口连接中断：设备已拔出" in row.text() and "0.1.0" in row.text()
    # back online: the reason is gone
    hall.call(hall.agent.device_seen(1002, {"online": True, "link": "serial"}))
    assert hall.q("SELECT json_extract(info, '$.offline_reason') FROM devices"
                  " WHERE device_id = 1002") == [(None,)]
