"""Shared pieces of the console tests: a hall (agent + HTTP API + console on loopback) running
in its own thread and event loop, so a test can drive real Chromium (Playwright's sync API) or
an HTTP client against it; synthetic accounts; a simulated session of ratings.

Everything here is real: the agent core, SQLite, the console's aiohttp app, argon2 hashes.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.agent_support import RecordingGateway, case_body, fast_tuning, rec, write_config

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "edge_agent" / "deploy" / "catalogue.seed-0.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PASSWORD = "test-password-1"
CST = dt.timezone(dt.timedelta(hours=8))

# synthetic accounts: (username, role, window, staff id)
USERS = (("sup", "supervisor", None, None), ("sup2", "supervisor", None, None),
         ("tech", "technician", None, None), ("win1", "window", "A01", "S001"),
         ("win2", "window", "A02", None))


def console_config(tmp: Path, workdays: int = 5, **kw: Any) -> Path:
    """write_config's hall plus the reason-tag catalogue and a `[console]` on a free port."""
    p = write_config(tmp, **kw)
    text = p.read_text(encoding="utf-8").replace(
        "[[windows]]", f'catalogue = "{CATALOGUE}"\n\n[[windows]]', 1)
    text += (f'\n[console]\nlisten = "127.0.0.1:0"\nfollowup_workdays = {workdays}\n'
             f'public_url = "http://console.hall.test:8471"\n')
    p.write_text(text, encoding="utf-8")
    return p


class Hall:
    """Agent + HTTP API + console, in a thread with its own event loop."""

    def __init__(self, cfg_path: Path) -> None:
        self.cfg_path = cfg_path
        self.gateway = RecordingGateway()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.rseq = 0

    def call(self, coro, timeout: float = 60) -> Any:
        """Run a coroutine on the hall's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "Hall":
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        from aiohttp import web

        from edge_agent.agent import Agent
        from edge_agent.config import load_config
        from edge_agent.console import serve_console
        from edge_agent.http_api import make_app
        self.config = load_config(self.cfg_path)
        self.agent = Agent(self.config, fast_tuning())
        await self.agent.start()
        self.agent.register_gateway(self.gateway)
        self.runner = web.AppRunner(make_app(self.agent), access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.console_url, self._stop_console = await serve_console(self.agent,
                                                                   self.config.console)

    def stop(self) -> None:
        async def _stop():
            await self._stop_console()
            await self.runner.cleanup()
            await self.agent.stop()
        try:
            self.call(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    # ---------------------------------------------------------------- data

    def write(self, op) -> Any:
        return self.call(self.agent.writer.write(op))

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        from edge_agent.store import connect
        db = connect(self.config.storage, readonly=True)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def add_users(self) -> None:
        from edge_agent.console import accounts
        for name, role, window, staff in USERS:
            self.write(lambda db, n=name, r=role, w=window, s=staff: accounts.add_user(
                db, n, PASSWORD, r, f"测试{n}", w, s))

    def rate(self, project_no: str, level: int, window: str = "A01", reasons=(), n: int = 1,
             staff=("S001", "测试员甲"), task=("TEST-TASK-0001", "测试事项（虚构）"),
             at: float | None = None) -> str:
        """Report a case and rate it through its invitation (the real intake and ingest
        paths); returns the rating's global id."""
        body = case_body(project_no, window=window, n=n, staff={"id": staff[0], "name": staff[1]},
                         taskCode=task[0], taskName=task[1])
        if at is not None:
            body["acceptedAt"] = _cst(at - 1800)
            body["finishedAt"] = _cst(at - 60)

        async def go():
            status, reply = await self.agent.intake_case(body)
            assert status == 201, reply
            inv = reply["invitations"][0]["inviteId"]
            device = 1001 if window == "A01" else 1002
            self.rseq += 1
            r = rec(self.rseq, level=level, invite_id=inv, reasons=reasons,
                    t=at if at is not None else time.time())
            await self.agent.ingest(device, [r], time.time())
            return f"T01-{device}-{self.rseq}"
        return self.call(go())


def _cst(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, CST).strftime("%Y-%m-%d %H:%M:%S")


def hall_ts(y: int, m: int, d: int, hh: int = 10) -> float:
    return dt.datetime(y, m, d, hh, tzinfo=CST).timestamp()


class Client:
    """A logged-in HTTP client of the console (aiohttp, on the caller's own event loop)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session: aiohttp.ClientSession | None = None
        self.csrf = ""

    async def __aenter__(self) -> "Client":
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def login(self, username: str, password: str = PASSWORD) -> int:
        async with self.session.get(self.base + "/login") as r:
            token = _field(await r.text(), "csrf")
        async with self.session.post(self.base + "/login", data={
                "username": username, "password": password, "csrf": token, "next": "/"},
                allow_redirects=False) as r:
            status = r.status
        if status == 303:
            await self.refresh_csrf()
        return status

    async def refresh_csrf(self, path: str = "/devices") -> None:
        for p in (path, "/overview"):
            async with self.session.get(self.base + p) as r:
                if r.status == 200:
                    self.csrf = _field(await r.text(), "csrf")
                    return

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base + path, allow_redirects=False) as r:
            return r.status, await r.text()

    async def get_bytes(self, path: str) -> tuple[int, bytes, dict]:
        async with self.session.get(self.base + path, allow_redirects=False) as r:
            return r.status, await r.read(), dict(r.headers)

    async def post(self, path: str, data: dict | aiohttp.FormData, csrf: str | None = None
                   ) -> tuple[int, str, str]:
        if isinstance(data, dict):
            data = {"csrf": self.csrf if csrf is None else csrf, **data}
        async with self.session.post(self.base + path, data=data, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()


def _field(html: str, name: str) -> str:
    m = re.search(r'name="%s" value="([^"]*)"' % name, html)
    assert m, f"no {name} field in the page"
    return m.group(1)


# ---------------------------------------------------------------- parsed HTML

class Node:
    """An element of a parsed page (stdlib html.parser; enough to assert on structure)."""

    def __init__(self, tag: str, attrs: dict, parent: "Node | None") -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list:
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if cls and cls not in (n.attrs.get("class") or "").split():
                continue
            if any(n.attrs.get(k) != v for k, v in attrs.items()):
                continue
            out.append(n)
        return out

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}> in the page"
        return found[0]


_VOID = {"meta", "link", "input", "br", "img", "hr", "source", "col", "area", "base", "wbr"}


def parse_html(html: str) -> Node:
    from html.parser import HTMLParser
    root = Node("#root", {}, None)

    class P(HTMLParser):
        cur = root

        def handle_starttag(self, tag, attrs):
            n = Node(tag, {k: (v or "") for k, v in attrs}, self.cur)
            self.cur.children.append(n)
            if tag not in _VOID:
                self.cur = n

        def handle_startendtag(self, tag, attrs):
            self.cur.children.append(Node(tag, {k: (v or "") for k, v in attrs}, self.cur))

        def handle_endtag(self, tag):
            n = self.cur
            while n is not None and n.tag != tag:
                n = n.parent
            if n is not None and n.parent is not None:
                self.cur = n.parent

        def handle_data(self, data):
            self.cur.children.append(data)
    p = P(convert_charrefs=True)
    p.feed(html)
    return root


# ---------------------------------------------------------------- a simulated session

TASK_A = ("TEST-YYZZ-01", "营业执照办理（虚构）")
TASK_B = ("TEST-SBK-02", "社保卡补办（虚构）")
STAFF_A = ("S001", "测试员甲")
STAFF_B = ("S002", "测试员乙")
HOLIDAY_RATING_AT = hall_ts(2026, 9, 30, 10)   # the day before National Day


def seed_session(h: Hall) -> dict:
    """A morning at two windows through the real intake and ingest paths. Returns the global
    ids: good/bad per window, the 差评 of 2026-09-30 (deadline across National Day)."""
    ids: dict = {"A01": [], "A02": []}
    n = 0
    for window, staff, task, levels in (
            ("A01", STAFF_A, TASK_A, [(1, ()), (1, ()), (2, ()), (3, ()), (4, (207,)),
                                      (5, (107, 101))]),
            ("A02", STAFF_B, TASK_B, [(1, ()), (2, ()), (5, (102,))])):
        for level, reasons in levels:
            n += 1
            gid = h.rate(f"P-SEED-{n:03d}", level, window=window, reasons=reasons, n=n,
                         staff=staff, task=task)
            ids[window].append((gid, level))
    n += 1
    ids["holiday"] = h.rate("P-SEED-HOLIDAY", 4, window="A01", reasons=(203,), n=n,
                            staff=STAFF_A, task=TASK_A, at=HOLIDAY_RATING_AT)
    ids["bad_A01"] = [g for g, lv in ids["A01"] if lv >= 4]
    ids["bad_A02"] = [g for g, lv in ids["A02"] if lv >= 4]
    # an unsolicited press at A02 with no case left to take it: kept, unbound, listed
    h.rseq += 1
    h.call(h.agent.ingest(1002, [rec(h.rseq, level=4, reasons=(209,))], time.time()))
    ids["unbound"] = f"T01-1002-{h.rseq}"
    return ids


def seeded_hall(tmp: Path, **config: Any) -> Hall:
    """A started hall with the synthetic accounts and the simulated session (`h.ids`)."""
    h = Hall(console_config(tmp, **config)).start()
    try:
        h.add_users()
        h.ids = seed_session(h)
    except BaseException:
        h.stop()
        raise
    return h
