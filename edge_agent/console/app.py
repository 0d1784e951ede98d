"""The console application: the `Console` object the views share, the middlewares (login,
roles, CSRF, security headers) and the background rollup of statistics.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..catalogue import ReasonBook
from ..config import Console as ConsoleSettings
from . import auth, rollup, routes

log = logging.getLogger("edge_agent.console")

HERE = Path(__file__).resolve().parent
CONSOLE_KEY = web.AppKey("console", object)
UPLOAD_MAX = 12 * 1024 * 1024          # a paper-form scan (10 MB) plus the form fields
ROLLUP_EVERY_S = 30.0
# the browser may load only what the agent serves; inline scripts never run (chart data
# travels as <script type="application/json">, which is not executed)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


class Console:
    """What the views need: the agent (reader, writer, uploader), settings, reason names."""

    def __init__(self, agent: Any, settings: ConsoleSettings,
                 book: ReasonBook | None = None) -> None:
        self.agent = agent
        self.settings = settings
        self.book = book if book is not None else agent.reasons
        self.throttle = auth.Throttle()
        self.window_names = {w.id: w.name for w in agent.config.windows}
        self.flashes: dict[str, tuple[str, str]] = {}
        self._task: asyncio.Task | None = None

    def db(self):
        return self.agent.reader()

    async def write(self, op) -> Any:
        return await self.agent.writer.write(op)

    def flash(self, user: dict, kind: str, text: str) -> None:
        """A one-time message for the user's next page (after a POST redirect)."""
        self.flashes[user["session"]] = (kind, text)

    def take_flash(self, user: dict | None) -> tuple[str, str] | None:
        return self.flashes.pop(user["session"], None) if user else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._rollups(), name="console-rollups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def roll_up(self, now: float | None = None) -> int:
        """Bring the statistics rollups up to date (settled ratings only); returns ids passed."""
        cutoff = (time.time() if now is None else now) - self.agent.config.binding_window_s - 120
        total = 0
        while True:
            n = await self.write(lambda db: rollup.roll_forward(db, cutoff))
            total += n
            if n < rollup.BATCH:
                return total

    async def _rollups(self) -> None:
        while True:
            try:
                await self.roll_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # storage trouble: statistics count the tail live
                log.warning("statistics rollup failed", extra={"reason": type(exc).__name__})
            await asyncio.sleep(ROLLUP_EVERY_S)


def _wants_json(request: web.Request) -> bool:
    return request.match_info.get("ext") == ".json"


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as exc:   # redirects and aiohttp's own 404/405 get them too
        resp = exc
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        resp.headers.setdefault("Cache-Control", "no-store")
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


def _deny(request: web.Request, status: int, message: str) -> web.StreamResponse:
    if _wants_json(request) or request.headers.get("Accept", "").startswith("application/json"):
        return web.json_response({"error": message}, status=status,
                                 dumps=lambda d: json.dumps(d, ensure_ascii=False))
    from .views import respond
    return respond(request, "error.html", {"status": status, "message": message}, "无法访问",
                   status)


@web.middleware
async def access(request: web.Request, handler) -> web.StreamResponse:
    """Login, role and CSRF checks for every route of the table."""
    info = request.match_info
    route = routes.BY_NAME.get(info.route.name or "") if info.route is not None else None
    if route is None:           # static files, 404, 405
        return await handler(request)
    console: Console = request.app[CONSOLE_KEY]
    user = auth.session_user(console.db(), request.cookies.get(auth.SESSION_COOKIE))
    request[auth.USER_KEY] = user
    if route.roles is not None:
        if user is None:
            if _wants_json(request) or request.method != "GET":
                return _deny(request, 401, "未登录或会话已过期，请重新登录")
            raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
        if user["role"] not in route.roles:
            return _deny(request, 403, "您的角色无权使用此页面")
    if request.method == "POST":
        if route.name == "login_submit":
            expected = request.cookies.get(auth.LOGIN_COOKIE)
        else:
            expected = user["csrf"] if user else None
        given = request.headers.get("X-CSRF-Token")
        if given is None:
            form = await request.post()
            given = form.get("csrf")
        if not auth.same(str(given) if given is not None else None, expected):
            log.warning("csrf refused", extra={"path": request.path})
            return _deny(request, 403, "表单校验失败（CSRF 令牌无效或页面已过期），请刷新页面后重试")
    try:
        return await handler(request)
    except auth.Denied as exc:
        return _deny(request, 403, exc.message)


def make_console_app(console: Console) -> web.Application:
    """The aiohttp application of the console (served on `console.listen`)."""
    app = web.Application(middlewares=[security_headers, access], client_max_size=UPLOAD_MAX)
    app[CONSOLE_KEY] = console
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                               autoescape=True, undefined=jinja2.StrictUndefined,
                               default_helpers=False)
    from . import views
    env.filters.update(views.FILTERS)
    routes.add_routes(app)
    app.router.add_static("/static", HERE / "static", name="static", append_version=False)
    return app


async def serve_console(agent: Any, settings: ConsoleSettings, book: ReasonBook | None = None
                        ) -> tuple[str, Any]:
    """Start the console for a started agent on `settings.listen_*`; returns (local URL,
    async stop())."""
    console = Console(agent, settings, book)
    await console.start()
    runner = web.AppRunner(make_console_app(console), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, settings.listen_host, settings.listen_port).start()
    port = runner.addresses[0][1] if runner.addresses else settings.listen_port
    host = settings.listen_host
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    async def stop() -> None:
        await runner.cleanup()
        await console.stop()
    return f"http://{local}:{port}", stop
