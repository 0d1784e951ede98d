"""Console views: gather data with `queries`, then answer with the page or its `.json` twin.

Views do permission checks that depend on the row (a window's own 差评), call one write
function per POST inside the agent's writer, and redirect (303) to the page that shows the
result. They hold no SQL; templates hold no logic beyond loops and formatting.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from .. import queries as agent_queries
from . import accounts, audit, auth, exports, followups, paper as paper_mod, queries
from .accounts import ROLES, WINDOW
from .followups import ActionError

MAX_RANGE_DAYS = 3660


def _console(request: web.Request):
    from .app import CONSOLE_KEY
    return request.app[CONSOLE_KEY]


def _user(request: web.Request) -> dict:
    return request[auth.USER_KEY]


def _scope(request: web.Request) -> str | None:
    """The window a user is limited to (window staff), None for the whole hall."""
    u = _user(request)
    return u["window"] if u["role"] == WINDOW else None


def _ip(request: web.Request) -> str | None:
    return request.remote


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def respond(request: web.Request, template: str, data: dict, title: str,
            status: int = 200) -> web.StreamResponse:
    """The page, or with `.json` the same data dict as JSON."""
    if request.match_info.get("ext") == ".json":
        return _json(data, status)
    from .routes import NAV
    console = _console(request)
    user = request.get(auth.USER_KEY)
    nav = [{"href": "/" + name, "label": label, "active": request.path.startswith("/" + name)}
           for name, label, roles in NAV if user and user["role"] in roles]
    ui = {"title": title, "user": user, "nav": nav, "hall": console.agent.config.hall.name,
            "roleName": ROLES.get(user["role"], "") if user else "",
            "csrf": user["csrf"] if user else "", "flash": console.take_flash(user),
            "windowNames": console.window_names, "path": request.path}
    return aiohttp_jinja2.render_template(template, request, {"ui": ui, **data},
                                          status=status)


def _back(request: web.Request, to: str, kind: str = "", text: str = "") -> web.HTTPSeeOther:
    if text:
        _console(request).flash(_user(request), kind, text)
    return web.HTTPSeeOther(to)


async def _form(request: web.Request) -> dict:
    form = await request.post()
    return {k: v for k, v in form.items()}


# ---------------------------------------------------------------- login


async def login_page(request: web.Request) -> web.StreamResponse:
    token = auth.new_token()
    nxt = request.query.get("next", "/")
    resp = respond(request, "login.html", {"next": nxt if _safe_next(nxt) else "/",
                                           "loginCsrf": token, "error": None}, "登录")
    _set_cookie(request, resp, auth.LOGIN_COOKIE, token, max_age=3600)
    return resp


def _safe_next(nxt: str) -> bool:
    return nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt


def _set_cookie(request: web.Request, resp: web.StreamResponse, name: str, value: str,
                max_age: int | None = None) -> None:
    secure = _console(request).settings.public_url.startswith("https://")
    resp.set_cookie(name, value, max_age=max_age, httponly=True, samesite="Strict", path="/",
                    secure=secure)


async def login_submit(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    form = await _form(request)
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))
    nxt = str(form.get("next", "/"))
    keys = ["user:" + username.lower(), "ip:" + (request.remote or "?")]
    wait = console.throttle.blocked_for(keys)
    if wait > 0:
        await console.write(lambda db: audit.record(db, username or "?", "login_failed", None,
                                                    "throttled", _ip(request)))
        return _login_error(request, nxt, f"登录失败次数过多，请 {int(wait // 60) + 1} 分钟后再试",
                            429)
    loop = asyncio.get_running_loop()
    # argon2 takes tens of milliseconds on purpose: off the event loop
    user = await loop.run_in_executor(None, _verify, console.agent.config.storage, username,
                                      password)
    if user is None:
        console.throttle.failed(keys)
        await console.write(lambda db: audit.record(db, username or "?", "login_failed", None,
                                                    None, _ip(request)))
        return _login_error(request, nxt, "用户名或密码错误", 401)
    console.throttle.succeeded(keys[0])
    hours = console.settings.session_hours

    def op(db):
        token, _ = auth.create_session(db, user["id"], hours)
        audit.record(db, user["username"], "login", None, None, _ip(request))
        return token
    token = await console.write(op)
    resp = web.HTTPSeeOther(nxt if _safe_next(nxt) else "/")
    _set_cookie(request, resp, auth.SESSION_COOKIE, token, max_age=int(hours * 3600))
    resp.del_cookie(auth.LOGIN_COOKIE, path="/")
    raise resp


def _verify(storage: str, username: str, password: str) -> dict | None:
    from ..store import connect
    db = connect(storage, readonly=True)
    try:
        return accounts.verify(db, username, password)
    finally:
        db.close()


def _login_error(request: web.Request, nxt: str, message: str, status: int
                 ) -> web.StreamResponse:
    token = auth.new_token()
    resp = respond(request, "login.html", {"next": nxt if _safe_next(nxt) else "/",
                                           "loginCsrf": token, "error": message}, "登录",
                   status=status)
    _set_cookie(request, resp, auth.LOGIN_COOKIE, token, max_age=3600)
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    user = _user(request)
    token = request.cookies.get(auth.SESSION_COOKIE, "")

    def op(db):
        auth.end_session(db, token)
        audit.record(db, user["username"], "logout", None, None, _ip(request))
    await _console(request).write(op)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(auth.SESSION_COOKIE, path="/")
    raise resp


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/devices" if _user(request)["role"] == accounts.TECHNICIAN
                           else "/overview")


# ---------------------------------------------------------------- overview and statistics


async def overview(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    data = queries.overview(console.db(), time.time(), _scope(request),
                            console.settings.followup_workdays)
    return respond(request, "overview.html", data, "总览")


def _day(text: str | None, default: dt.date) -> dt.date:
    if not text:
        return default
    return dt.date.fromisoformat(text)


async def stats(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    today = queries.hall_day(time.time())
    q = request.query
    error = None
    try:
        d0 = _day(q.get("from"), today.replace(day=1))
        d1 = _day(q.get("to"), today)
    except ValueError:
        d0, d1, error = today.replace(day=1), today, "日期格式应为 YYYY-MM-DD，已显示本月"
    if d1 < d0:
        d0, d1 = d1, d0
    if (d1 - d0).days > MAX_RANGE_DAYS:
        d0, error = d1 - dt.timedelta(days=MAX_RANGE_DAYS), "时间范围最长 10 年，已截短"
    scope = _scope(request)
    window = scope if scope is not None else (q.get("window") or None)
    if window is not None and window not in console.window_names:
        window, error = None, "未知窗口，已显示全部窗口"
    period = "month" if q.get("period") == "month" else "day"
    ext = request.match_info.get("ext")
    user = _user(request)
    if ext in (".xlsx", ".csv"):
        rows = queries.export_rows(console.db(), d0, d1, window, console.book, user["role"],
                                   console.window_names)
        if len(rows) > exports.MAX_ROWS:
            return _json({"error": f"导出行数 {len(rows)} 超过上限 {exports.MAX_ROWS}，请缩小时间范围"},
                         413)
        detail = f"{d0}..{d1} window={window or '全部'} rows={len(rows)}"
        name = f"好差评统计_{d0}_{d1}{'_' + window if window else ''}{ext}"
        await console.write(lambda db: audit.record(db, user["username"], "export",
                                                    "stats" + ext, detail, _ip(request)))
        if ext == ".csv":
            body, ctype = exports.csv_bytes(rows), "text/csv; charset=utf-8"
        else:
            data = queries.statistics(console.db(), d0, d1, window, console.book,
                                      console.window_names, period)
            body = await asyncio.get_running_loop().run_in_executor(
                None, exports.xlsx_bytes, data, rows)
            ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        return web.Response(body=body, headers={
            "Content-Type": ctype,
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})
    data = queries.statistics(console.db(), d0, d1, window, console.book,
                              console.window_names, period)
    data["error"] = error
    data["windows"] = [] if scope is not None else [
        {"id": k, "name": v} for k, v in console.window_names.items()]
    data["query"] = f"from={d0}&to={d1}&period={period}" + (f"&window={window}" if window
                                                           else "")
    return respond(request, "stats.html", data, "统计")


# ---------------------------------------------------------------- the 差评 worklist


async def worklist(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    q = request.query
    try:
        page = int(q.get("page", "1"))
    except ValueError:
        page = 1
    data = queries.worklist(console.db(), time.time(), _scope(request), console.book,
                            console.settings.followup_workdays, console.window_names,
                            state=q.get("state") or None, overdue_only=q.get("overdue") == "1",
                            page=page)
    return respond(request, "worklist.html", data, "差评工作台")


def _own(request: web.Request, gid: str) -> dict:
    """The 差评's scope row if this user may see it; 404/403 otherwise."""
    console = _console(request)
    row = queries.rating_scope(console.db(), gid)
    if row is None:
        raise web.HTTPNotFound(text="无此差评")
    user = _user(request)
    if user["role"] == WINDOW and row["window"] != user["window"]:
        raise auth.Denied("窗口人员只能查看本窗口的差评")
    return row


async def bad_rating(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    gid = request.match_info["gid"]
    user = _user(request)
    _own(request, gid)
    data = queries.bad_rating(console.db(), gid, time.time(), user["role"], console.book,
                              console.settings.followup_workdays, console.window_names)
    await console.write(lambda db: audit.record(db, user["username"], "view_bad_rating", gid,
                                                None, _ip(request)))
    data["mayAppeal"] = (user["role"] == WINDOW and
                         not any(a["state"] == "filed" for a in data["appeals"]) and
                         (not user["staffId"] or user["staffId"] == data["staffId"]))
    data["workdays"] = console.settings.followup_workdays
    data["transitions"] = [{"state": s, "name": queries.FOLLOWUP_STATES[s]}
                           for s in followups.TRANSITIONS[data["state"]]]
    return respond(request, "bad_rating.html", {"item": data}, f"差评 {gid}")


async def _act(request: web.Request, gid: str, op) -> web.StreamResponse:
    try:
        await _console(request).write(op)
    except ActionError as exc:
        raise _back(request, f"/worklist/{gid}", "error", str(exc))
    raise _back(request, f"/worklist/{gid}", "ok", "已保存")


async def followup_submit(request: web.Request) -> web.StreamResponse:
    gid = request.match_info["gid"]
    _own(request, gid)
    form = await _form(request)
    user = _user(request)
    return await _act(request, gid, lambda db: followups.advance(
        db, gid, str(form.get("state", "")), str(form.get("note", "")),
        str(form.get("assignee", "")), user["username"], _ip(request)))


async def appeal_submit(request: web.Request) -> web.StreamResponse:
    gid = request.match_info["gid"]
    user = _user(request)
    row = _own(request, gid)
    if user["staffId"] and row["staff_id"] != user["staffId"]:
        raise auth.Denied("只能对本人经办的差评提出申诉")
    form = await _form(request)
    return await _act(request, gid, lambda db: followups.file_appeal(
        db, gid, str(form.get("reason", "")), user["username"], _ip(request)))


async def appeal_decide(request: web.Request) -> web.StreamResponse:
    gid = request.match_info["gid"]
    _own(request, gid)
    form = await _form(request)
    user = _user(request)
    aid = int(request.match_info["aid"])
    return await _act(request, gid, lambda db: followups.decide_appeal(
        db, gid, aid, form.get("outcome") == "upheld", str(form.get("note", "")),
        user["username"], _ip(request)))


# ---------------------------------------------------------------- paper forms


async def paper(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    today = queries.hall_day(time.time())
    data = {"forms": queries.paper_forms(console.db(), console.book),
            "tags": queries.catalogue_choices(console.book), "today": today.isoformat(),
            "levels": [{"level": lv, "name": n} for lv, n in queries.LEVEL_NAMES.items()]}
    return respond(request, "paper.html", data, "纸质评价")


async def paper_submit(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    user = _user(request)
    form = await request.post()
    scan = form.get("scan")
    data = scan.file.read(paper_mod.SCAN_MAX_BYTES + 1) if hasattr(scan, "file") else b""
    try:
        level = int(str(form.get("level", "0")) or 0)
        codes, written, day = paper_mod.validate(
            console.book, level, [str(t) for t in form.getall("tag", [])],
            str(form.get("written", "")), str(form.get("rated_on", "")),
            queries.hall_day(time.time()))
        stored = await asyncio.get_running_loop().run_in_executor(
            None, paper_mod.store_scan, console.settings.scans_dir, data)
        project_no = str(form.get("project_no", ""))
        form_id = await console.write(lambda db: paper_mod.enter(
            db, project_no, level, codes, written, day, stored, user["username"], _ip(request)))
    except (ActionError, ValueError) as exc:
        raise _back(request, "/paper", "error", str(exc) if isinstance(exc, ActionError)
                    else "评价等级无效")
    raise _back(request, "/paper", "ok", f"纸质评价 #{form_id} 已录入，请另一位管理员复核确认")


async def paper_check(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    user = _user(request)
    fid = int(request.match_info["fid"])
    form = await _form(request)
    confirm = form.get("decision") == "confirm"
    hall = console.agent.config.hall.hall_code
    version = console.book.version or 0
    try:
        queued = await console.write(lambda db: paper_mod.check(
            db, fid, user["username"], confirm, str(form.get("reason", "")), _ip(request),
            hall_code=hall, cat_version=version))
    except ActionError as exc:
        raise _back(request, "/paper", "error", str(exc))
    if queued is not None:
        console.agent.uploader.wake()     # upload it now, like a device's rating
    raise _back(request, "/paper", "ok", f"纸质评价 #{fid} 已{'确认并进入上传队列' if confirm else '退回'}")


async def paper_scan(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    user = _user(request)
    fid = int(request.match_info["fid"])
    row = queries.paper_form(console.db(), fid)
    if row is None:
        raise web.HTTPNotFound(text="无此纸质评价")
    path = Path(console.settings.scans_dir) / row["scan_file"]
    await console.write(lambda db: audit.record(db, user["username"], "paper_scan_viewed",
                                                f"form {fid}", None, _ip(request)))
    return web.FileResponse(path, headers={"Content-Type": row["scan_type"],
                                           "Content-Disposition": "inline"})


# ---------------------------------------------------------------- devices and uploads


async def devices(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    data = queries.devices_page(console.db(), console.book)
    return respond(request, "devices.html", data, "设备")


async def retry_uploads(request: web.Request) -> web.StreamResponse:
    """Release parked uploads: the same core as `hcp agent outbox retry`."""
    console = _console(request)
    user = _user(request)
    form = await _form(request)
    job = str(form.get("job", "all"))
    job_id = None if job == "all" else int(job) if job.isdigit() else -1

    def op(db):
        n = agent_queries.retry_parked(db, job_id)
        audit.record(db, user["username"], "upload_retry", job, f"released {n}", _ip(request))
        return n
    n = await console.write(op)
    console.agent.uploader.wake()
    raise _back(request, "/devices", "ok" if n else "error",
                f"已重新排队 {n} 条上传" if n else "没有可重试的上传")


# ---------------------------------------------------------------- audit and accounts


async def audit_page(request: web.Request) -> web.StreamResponse:
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        page = 1
    data = queries.audit_log(_console(request).db(), page)
    data["actions"] = audit.ACTIONS
    return respond(request, "audit.html", data, "审计")


async def users(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    data = {"users": accounts.list_users(console.db()), "roles": ROLES,
            "windows": [{"id": k, "name": v} for k, v in console.window_names.items()]}
    return respond(request, "users.html", data, "账号")


async def user_add(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    user = _user(request)
    form = await _form(request)
    username = str(form.get("username", "")).strip()
    role = str(form.get("role", ""))

    def op(db):
        accounts.add_user(db, username, str(form.get("password", "")), role,
                          str(form.get("display_name", "")), str(form.get("window", "")) or None
                          if role == WINDOW else None,
                          str(form.get("staff_id", "")).strip() or None if role == WINDOW
                          else None, set(console.window_names))
        audit.record(db, user["username"], "user_added", username, role, _ip(request))
    try:
        await console.write(op)
    except accounts.AccountError as exc:
        raise _back(request, "/users", "error", str(exc))
    raise _back(request, "/users", "ok", f"已新增账号 {username}")


async def user_disable(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    user = _user(request)
    uid = int(request.match_info["uid"])
    target = next((u for u in accounts.list_users(console.db()) if u["id"] == uid), None)
    if target is None:
        raise web.HTTPNotFound(text="无此账号")
    if target["username"] == user["username"]:
        raise _back(request, "/users", "error", "不能停用自己的账号")

    def op(db):
        accounts.set_disabled(db, target["username"], True)
        audit.record(db, user["username"], "user_disabled", target["username"], None,
                     _ip(request))
    await console.write(op)
    raise _back(request, "/users", "ok", f"已停用账号 {target['username']}")


# ---------------------------------------------------------------- template filters


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _short_time(iso: str | None) -> str:
    return "—" if not iso else iso.replace("T", " ")[:16]


FILTERS = {"pct": _pct, "when": _short_time}
