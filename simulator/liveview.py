"""The demo's terminal view (rich): windows and what their evaluators show, the pipeline
counters (cases, presses, stored, uploaded, backlog, 差评 alerts) and recent events.

On a terminal it is a `rich.live.Live` display redrawn a few times a second. Without one (CI,
a pipe) it prints a plain status line every few seconds and each event once.
"""
from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .hall import Hall

LINK_STYLE = {"up": "green", "hello": "yellow", "down": "red", "off": "red"}
SCREEN_TEXT = {"idle": "待机 idle", "invite": "请评价 invited", "reason": "选原因 reason",
               "thanks": "谢谢 thanks", "paused": "暂停 paused", "corrupt": "存储故障 corrupt",
               "off": "断电 off", "scan": "请扫码 scan", "scan_bad": "无法识别 unreadable",
               "": ""}


class Snapshot:
    """What the view shows that comes from outside the hall (agent and province), refreshed
    by the demo's poller."""

    def __init__(self) -> None:
        self.phase = "starting"
        self.agent: dict[str, Any] = {}
        self.province: dict[str, Any] = {}
        self.alerts_delivered = 0
        self.outage = ""


def _windows(hall: Hall) -> Table:
    t = Table(title="窗口与评价器 windows & evaluators", expand=True, title_justify="left")
    for col, just in (("窗口 window", "left"), ("设备 device", "right"), ("链路 link", "left"),
                      ("屏幕 screen", "left"), ("邀请 invitation", "left"),
                      ("受理 served", "left"), ("已评 rated", "right"),
                      ("积压 backlog", "right"), ("启动 boots", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    for w in hall.windows:
        d = w.device
        ls = d.link_state
        inv = f"#{d.invite_id} No.{d.staff_no}" if d.invite_id else ""
        backlog = d.backlog
        t.add_row(w.window, str(d.device_id), Text(ls.upper(), style=LINK_STYLE.get(ls, "")),
                  SCREEN_TEXT.get(d.screen, d.screen), inv, w.serving, str(len(d.accepted)),
                  "-" if backlog < 0 else str(backlog), str(d.boots))
    for d in hall.waiting:
        ls = d.link_state
        backlog = d.backlog
        t.add_row("等候区 waiting", str(d.device_id),
                  Text(ls.upper(), style=LINK_STYLE.get(ls, "")),
                  SCREEN_TEXT.get(d.screen, d.screen), "", hall.waiting_area.serving,
                  str(len(d.accepted)), "-" if backlog < 0 else str(backlog), str(d.boots))
    return t


def pipeline_numbers(hall: Hall, snap: Snapshot) -> dict[str, Any]:
    a = snap.agent
    outbox = a.get("outbox", {})
    ratings = sum(a.get("ratings", {}).values()) if a else 0
    bad = sum(v for k, v in a.get("ratings", {}).items() if k in ("4", "5")) if a else 0
    backlog = sum(max(0, d.backlog) for d in hall.devices)
    return {"cases": hall.counters.cases, "presses": len(hall.accepted()),
            "stored": ratings, "uploaded": outbox.get("done", 0),
            "pending": outbox.get("pending", 0), "parked": outbox.get("parked", 0),
            "unbound": sum(a.get("unbound", {}).values()) if a else 0,
            "bad": bad, "alerts": snap.alerts_delivered, "device_backlog": backlog,
            "province": snap.province.get("accepted", 0),
            "dups": snap.province.get("duplicates", 0)}


def _pipeline(hall: Hall, snap: Snapshot) -> Table:
    n = pipeline_numbers(hall, snap)
    t = Table(title="流水 pipeline", expand=True, title_justify="left")
    for col in ("办件 cases", "按键 presses", "已存储 stored", "已上传 uploaded",
                "待传 backlog", "拒收 parked", "未绑定 unbound", "差评 bad", "告警 alerts",
                "设备积压 on devices"):
        t.add_column(col, justify="right")
    t.add_row(str(n["cases"]), str(n["presses"]), str(n["stored"]),
              Text(str(n["uploaded"]), style="green"),
              Text(str(n["pending"]), style="yellow" if n["pending"] else ""),
              Text(str(n["parked"]), style="red" if n["parked"] else ""), str(n["unbound"]),
              Text(str(n["bad"]), style="magenta" if n["bad"] else ""), str(n["alerts"]),
              str(n["device_backlog"]))
    return t


def _events(hall: Hall, limit: int = 7) -> Text:
    now = time.monotonic()
    lines = list(hall.events)[-limit:]
    txt = Text()
    for at, text in lines:
        age = now - at
        txt.append(f"{age:5.1f}s ago  ", style="dim")
        txt.append(text + "\n", style="bold red" if "故障" in text or "断电" in text else "")
    return txt


def render(hall: Hall, snap: Snapshot, elapsed: float, duration: float, title: str) -> Group:
    head = Text()
    head.append(title, style="bold")
    head.append(f"   {snap.phase}   ", style="cyan")
    if snap.phase == "session":
        head.append(f"{elapsed:4.0f}/{duration:.0f} s")
    if snap.outage:
        head.append(f"   {snap.outage}", style="red")
    return Group(head, _windows(hall), _pipeline(hall, snap),
                 Panel(_events(hall), title="事件 events", title_align="left"))


class View:
    """Live view on a terminal, plain progress lines otherwise."""

    def __init__(self, console: Console, hall: Hall, snap: Snapshot, duration: float,
                 title: str) -> None:
        self.console = console
        self.hall = hall
        self.snap = snap
        self.duration = duration
        self.title = title
        self.live: Live | None = None
        self.tty = console.is_terminal
        self._printed = 0.0
        self._last_event_at = 0.0
        self._t0 = time.monotonic()

    def start(self) -> None:
        if self.tty:
            self.live = Live(self._render(), console=self.console, auto_refresh=False,
                             transient=False)
            self.live.start()

    def _render(self) -> Group:
        el = time.monotonic() - self.hall.started if self.hall.started else 0.0
        return render(self.hall, self.snap, el, self.duration, self.title)

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._render(), refresh=True)
            return
        # plain: new events once, a status line every 5 s
        new = [(at, text) for at, text in self.hall.events if at > self._last_event_at]
        for _, text in new:
            self.console.print(f"  · {text}", highlight=False)
        if new:
            self._last_event_at = new[-1][0]
        now = time.monotonic()
        if now - self._printed >= 5.0:
            self._printed = now
            n = pipeline_numbers(self.hall, self.snap)
            self.console.print(
                f"[{now - self._t0:5.1f}s {self.snap.phase}] 办件 cases {n['cases']}  "
                f"按键 presses {n['presses']}  已存储 stored {n['stored']}  "
                f"已上传 uploaded {n['uploaded']}  待传 backlog {n['pending']}  "
                f"设备积压 on devices {n['device_backlog']}  差评告警 alerts {n['alerts']}"
                + (f"  {self.snap.outage}" if self.snap.outage else ""), highlight=False)

    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self._render(), refresh=True)
            self.live.stop()
            self.live = None
