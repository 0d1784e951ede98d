"""Every console route in one table: method, path, view, who may use it.

A GET page whose path ends in `{ext}` also answers as `.json` (and the statistics page as
`.xlsx`/`.csv`): the same data dict feeds the template and the twin. `roles` None = no login
needed. The auth middleware reads this table; tests/test_console_routes.py checks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from . import views
from .accounts import SUPERVISOR as SUP, TECHNICIAN as TECH, WINDOW as WIN

JSON = r"{ext:(\.json)?}"
EXPORTS = r"{ext:(\.json|\.xlsx|\.csv)?}"
GID = r"{gid:[A-Za-z0-9_]+-[A-Za-z0-9]+-[0-9]+}"

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    view: View
    name: str
    roles: tuple[str, ...] | None     # None: public (login page, static files)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/login", views.login_page, "login", None),
    Route("POST", "/login", views.login_submit, "login_submit", None),
    Route("POST", "/logout", views.logout, "logout", (SUP, TECH, WIN)),
    Route("GET", "/", views.home, "home", (SUP, TECH, WIN)),
    Route("GET", "/overview" + JSON, views.overview, "overview", (SUP, WIN)),
    Route("GET", "/stats" + EXPORTS, views.stats, "stats", (SUP, WIN)),
    Route("GET", "/worklist" + JSON, views.worklist, "worklist", (SUP, WIN)),
    Route("GET", "/worklist/" + GID + JSON, views.bad_rating, "bad_rating", (SUP, WIN)),
    Route("POST", "/worklist/" + GID + "/followup", views.followup_submit, "followup", (SUP,)),
    Route("POST", "/worklist/" + GID + "/appeal", views.appeal_submit, "appeal", (WIN,)),
    Route("POST", "/worklist/" + GID + "/appeal/{aid:[0-9]+}", views.appeal_decide,
          "appeal_decide", (SUP,)),
    Route("GET", "/paper" + JSON, views.paper, "paper", (SUP,)),
    Route("POST", "/paper", views.paper_submit, "paper_submit", (SUP,)),
    Route("POST", "/paper/{fid:[0-9]+}/check", views.paper_check, "paper_check", (SUP,)),
    Route("GET", "/paper/{fid:[0-9]+}/scan", views.paper_scan, "paper_scan", (SUP,)),
    Route("GET", "/devices" + JSON, views.devices, "devices", (SUP, TECH)),
    Route("POST", "/devices/retry", views.retry_uploads, "retry", (SUP, TECH)),
    Route("GET", "/audit" + JSON, views.audit_page, "audit", (SUP,)),
    Route("GET", "/users" + JSON, views.users, "users", (SUP,)),
    Route("POST", "/users", views.user_add, "user_add", (SUP,)),
    Route("POST", "/users/{uid:[0-9]+}/disable", views.user_disable, "user_disable", (SUP,)),
)

BY_NAME = {r.name: r for r in ROUTES}

# the navigation bar: (route name, label, roles that see it)
NAV = (("overview", "总览", (SUP, WIN)), ("stats", "统计", (SUP, WIN)),
       ("worklist", "差评工作台", (SUP, WIN)), ("paper", "纸质评价", (SUP,)),
       ("devices", "设备", (SUP, TECH)), ("audit", "审计", (SUP,)), ("users", "账号", (SUP,)))


def add_routes(app: web.Application) -> None:
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.view, name=r.name)
