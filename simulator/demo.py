"""`hcp demo` (what `make demo` runs): the whole chain on one machine, one command.

Starts the province reference server, the edge agent (`hcp agent run` with a generated
hall.toml), six window evaluators and one waiting-area evaluator running the real firmware (pty
serial by default, or MQTT through Mosquitto), scripted citizens, staff and queue system, and
plays a compressed hall session. Shows a live view, waits for the backlog to drain, and ends with
a summary (Chinese + English); with `--json PATH` it writes the numbers. With `--hold S` the hall
keeps running S seconds after the summary (citizens keep coming, no faults) so you can look at
the live agent (its URL is in the summary). Everything it starts is stopped at the end, on
Ctrl-C and on errors. Exit code 0 when nothing was lost, 1 otherwise, 2 when it can't run here.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from . import accounting, faults as fmod, rundir, services
from .citizens import CitizenProfile
from .device import device_class
from .hall import Hall
from .liveview import Snapshot, View
from .ptyport import PtyPort
from .upstream_setup import profile_setup
from edge_agent.upstream.registry import PROFILE_NAMES
from tools.hcp import parse_args

TITLE = "好差评 大厅演示 hall demo"
_LIVE_SERVICES: list[services.Service] = []


@atexit.register
def _kill_leftovers() -> None:
    """Last line of defence: no child process outlives the demo."""
    for s in list(_LIVE_SERVICES):
        s.stop(timeout=2)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hcp demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=6, help="虚拟评价器数量 virtual evaluators (6)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="大厅时段秒数 seconds of hall session (60)")
    p.add_argument("--link", choices=("serial", "mqtt"), default="serial",
                   help="设备链路 device link: pty serial (default) or MQTT (Mosquitto)")
    p.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="设备固件运行时 firmware runtime: in this process (cpython, default) or "
                        "one MicroPython unix-port process per device (micropython)")
    p.add_argument("--faults", action="store_true",
                   help="故障：省平台中途停机、一台断电、一台拔线 province outage mid-session, "
                        "one device power cut, one link unplug (+ line noise / broker restart)")
    p.add_argument("--json", metavar="PATH", help="把汇总写成 JSON write the summary as JSON")
    p.add_argument("--seed", type=int, default=7, help="随机种子 seed (7)")
    p.add_argument("--profile", default="gbt39046-json", choices=PROFILE_NAMES,
                   help="省平台接口 province profile")
    p.add_argument("--run-dir", help="运行目录（保留）keep everything here instead of a temp dir")
    p.add_argument("--drain-timeout", type=float, default=45.0,
                   help="结束后等待积压清空的上限秒数 max seconds to wait for the backlog (45)")
    p.add_argument("--arrival", type=float, default=5.0,
                   help="每个窗口办事群众到达平均间隔秒 mean seconds between citizens (5)")
    p.add_argument("--waiting-area", type=int, default=1,
                   help="等候区评价器数量 waiting-area evaluators (1)")
    p.add_argument("--waiting-share", type=float, default=0.15,
                   help="改到等候区评价的群众比例 share of citizens who rate in the waiting area "
                        "(0.15)")
    p.add_argument("--hold", type=float, default=0.0, metavar="S",
                   help="汇总后继续运行 S 秒以便查看 keep the hall running S seconds after the "
                        "summary (0)")
    return p


DEMO_USER = "demo"


def _demo_account(db_path: Path) -> str:
    """A demo-only supervisor account on the demo's own database; returns its password."""
    import secrets
    from edge_agent.console import accounts
    from edge_agent.store import open_database
    password = secrets.token_urlsafe(9)
    db = open_database(str(db_path))
    try:
        with db.atomic():
            accounts.add_user(db, DEMO_USER, password, accounts.SUPERVISOR, "演示管理员")
    finally:
        db.close()
    return password


async def _refresh(s: aiohttp.ClientSession, snap: Snapshot, agent_url: str,
                   province_url: str, sink: services.AlertSink) -> None:
    """Fetch the agent's /v1/status and the province's /_stats into the snapshot."""
    for url, key in ((agent_url + "/v1/status", "agent"), (province_url + "/_stats", "province")):
        try:
            async with s.get(url) as r:
                if r.status == 200:
                    setattr(snap, key, await r.json())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            pass
    snap.alerts_delivered = len(sink.alerts)


async def _poll(hall: Hall, snap: Snapshot, agent_url: str, province_url: str,
                sink: services.AlertSink, view: View) -> None:
    """Refresh the agent/province numbers twice a second and the view four times."""
    last = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while True:
            now = time.monotonic()
            if now - last >= 0.5:
                last = now
                await _refresh(s, snap, agent_url, province_url, sink)
            view.update()
            await asyncio.sleep(0.25)


async def _agent_idle(agent_url: str) -> bool:
    """True when the agent has no upload or alert waiting."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
            async with s.get(agent_url + "/v1/status") as r:
                st = await r.json()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return False
    return st["outbox"].get("pending", 0) == 0 and st["alerts"].get("pending", 0) == 0 and \
        st.get("serviceRecords", {}).get("pending", 0) == 0


def waiting_area_summary(hall: Hall, hall_code: str, agent_db: dict) -> dict:
    """Presses the waiting-area evaluators accepted, and how many the agent bound to a case."""
    presses = [a for d in hall.waiting for a in d.accepted]
    ratings = agent_db["ratings"]
    bound = sum(1 for a in presses
                if ratings.get(f"{hall_code}-{a.device_id}-{a.rseq}", {}).get("binding",
                                                                            "unbound")
                != "unbound")
    return {"devices": len(hall.waiting), "presses": len(presses), "bound": bound}


async def run(args: argparse.Namespace, console: Console, on_summary=None) -> dict:
    """Play the demo; returns the summary dict (raises ServiceError when a service fails).
    `on_summary(summary)` is called as soon as the summary exists — before a `--hold`."""
    own_dir = args.run_dir is None
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="hcp-demo-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    kinds = ["power-cut", "unplug", "noise", "broker-restart"] if args.faults else []
    started: list[services.Service] = []
    hall: Hall | None = None
    sink = services.AlertSink()
    poller: asyncio.Task | None = None
    view: View | None = None
    broker: services.Broker | None = None
    ports: dict[int, PtyPort] = {}
    try:
        console.print(f"[bold]{TITLE}[/]  设备 devices {args.devices} ({args.runtime}), "
                      f"链路 link {args.link}, "
                      f"时长 {args.duration:.0f} s, 故障 faults {'on' if args.faults else 'off'}"
                      f"\n运行目录 run dir: {run_dir}", highlight=False)
        webhook = await sink.start()
        broker_port = services.free_port() if args.link == "mqtt" else None
        specs = rundir.make_devices(run_dir, args.devices, args.link, broker_port,
                                    waiting_area=args.waiting_area)
        clients = rundir.make_clients(run_dir)
        agent_pw = ""
        if args.link == "mqtt":
            import secrets
            agent_pw = secrets.token_hex(12)
            users = {"hcp-agent": agent_pw, **{str(s.device_id): s.mqtt_password for s in specs}}
            broker = services.Broker(run_dir, users, port=broker_port)
            started.append(broker.service)
            _LIVE_SERVICES.append(broker.service)
            await asyncio.get_running_loop().run_in_executor(None, broker.start)
        # the province starts when the session does (its outage window counts from its start);
        # the agent is told its address now and retries until it answers
        province_port = services.free_port()
        province_url = f"http://127.0.0.1:{province_port}"
        console_port = services.free_port()
        upstream_lines, province_args = profile_setup(run_dir, args.profile, rundir.AREA)
        cfg = rundir.write_hall_config(run_dir, specs, province_url, profile=args.profile,
                                       webhook_url=webhook, broker_port=broker_port,
                                       agent_password=agent_pw, console_port=console_port,
                                       upstream_extra=upstream_lines)
        ports.update({s.device_id: PtyPort(s.port_path) for s in specs
                      if s.port_path is not None})
        for p in ports.values():
            p.plug()      # the adapters are "plugged in" before the agent starts looking
        agent = services.agent(cfg, run_dir)
        started.append(agent)
        _LIVE_SERVICES.append(agent)
        agent_url = await asyncio.get_running_loop().run_in_executor(None, agent.start)
        console_url = f"http://127.0.0.1:{console_port}"
        console_password = _demo_account(run_dir / "agent.db")
        console.print(f"代理 agent: {agent_url}  (hall.toml: {cfg})\n控制台 console: "
                      f"{console_url}  用户 user {DEMO_USER}  密码 password {console_password}",
                      highlight=False)

        phrases = rundir.phrases()
        skew_at = fmod.skewed_device(kinds + (["clock-skew"] if args.faults else []),
                                     args.devices)
        devices = []
        for i, s in enumerate(specs):
            port = ports.get(s.device_id)
            skew = fmod.SKEW_PPM if i == skew_at else (i * 37 % 200) - 100
            devices.append(device_class(args.runtime)(s.root, s.window, port, phrases,
                                                      skew_ppm=skew, seed=args.seed * 100 + i))
        plan = fmod.schedule(kinds, args.duration, args.devices, args.link)
        hall = Hall(devices, agent_url, CitizenProfile(arrival_s=args.arrival,
                                                       waiting_area=args.waiting_share),
                    seed=args.seed,
                    faults=plan, run_id=time.strftime("%m%d%H%M%S"),
                    broker_restart=broker.restart if broker is not None else None,
                    business=(rundir.BUSINESS_CLIENT, clients[rundir.BUSINESS_CLIENT]),
                    queue=(rundir.QUEUE_CLIENT, clients[rundir.QUEUE_CLIENT]))
        snap = Snapshot()
        view = View(console, hall, snap, args.duration, TITLE)
        await hall.start()
        view.start()
        poller = asyncio.create_task(_poll(hall, snap, agent_url, province_url, sink, view))
        snap.phase = "connecting 连接中"
        if not await hall.wait_online(30):
            hall.note("警告 warning: not every device came online within 30 s")

        outage = None
        if args.faults:
            length = max(3.0, round(args.duration * 0.2))
            outage = (round(args.duration * 0.4, 1), length)
        province = services.province(run_dir, args.profile, outage=(
            f"{outage[0]}:{outage[1]}" if outage else None), seed=args.seed, port=province_port,
            extra=province_args)
        started.append(province)
        _LIVE_SERVICES.append(province)
        await asyncio.get_running_loop().run_in_executor(None, province.start)
        console.print(f"省平台 province ({args.profile}): {province_url}", highlight=False)

        snap.phase = "session"
        outage_task = asyncio.create_task(_mark_outage(hall, snap, outage)) if outage else None
        await hall.play(args.duration)
        if outage_task is not None:
            await outage_task
        snap.phase = "draining 等待积压清空"
        end = time.monotonic() + args.drain_timeout
        drained = False
        while time.monotonic() < end:
            if await hall.drain(0.1) and await _agent_idle(agent_url):
                drained = True
                break
            await asyncio.sleep(0.3)
        snap.phase = "done 完成" if drained else "drain timeout 未清空"
        poller.cancel()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as hs:
            await _refresh(hs, snap, agent_url, province_url, sink)
        view.update()
        # the account: devices' press logs, the agent's database, the province's records
        stats, records = await asyncio.get_running_loop().run_in_executor(
            None, accounting.province_view, province_url)
        agent_db = accounting.agent_view(run_dir / "agent.db")
        c = hall.counters
        summary = accounting.summarise(
            hall.accepted(), rundir.HALL_CODE, agent_db, stats, records, args.devices, extra={
                "drained": drained, "link": args.link, "runtime": args.runtime,
                "duration_s": args.duration,
                "faults": hall.fault_log + ([f"province-outage {outage[0]}s+{outage[1]}s"]
                                            if outage else []),
                "power_cuts": {d.window: d.power_cuts for d in devices if d.power_cuts},
                "alerts_delivered": len(sink.alerts), "citizens": c.citizens,
                "button_presses": hall.button_presses(), "walk_aways": c.walk_aways,
                "double_presses": c.double_presses, "unsolicited_presses": c.unsolicited,
                "case_errors": c.case_errors, "reason_timeouts": c.reason_timeouts,
                "queue_events": c.queue_events, "queue_errors": c.queue_errors,
                "waiting_area_citizens": c.waiting_area,
                "waiting_area": waiting_area_summary(hall, rundir.HALL_CODE, agent_db),
                "agent_url": agent_url, "province_url": province_url,
                "console_url": console_url, "console_user": DEMO_USER,
                "console_password": console_password,
                "run_dir": str(run_dir) if not own_dir else None})
        if view is not None:
            view.stop()
            view = None
        if on_summary is not None:
            on_summary(summary)
        if args.hold > 0:    # the summary first (JSON too), then the hall keeps running
            console.print(f"[bold]保持运行 holding the hall for {args.hold:.0f} s[/] — 控制台 console "
                          f"{console_url} 用户 user {DEMO_USER} 密码 password {console_password}; "
                          f"代理 agent {agent_url} (/v1/status, /v1/devices, /v1/ratings/signals, "
                          f"/metrics, /openapi.json), 省平台 province {province_url}/_stats; "
                          "Ctrl-C 结束 to stop", highlight=False)
            held = asyncio.create_task(hall.play(args.hold, with_faults=False))
            try:
                await asyncio.sleep(args.hold)
            finally:
                held.cancel()
                try:
                    await held
                except (asyncio.CancelledError, Exception):
                    pass
        return summary
    finally:
        if poller is not None:
            poller.cancel()
            try:
                await poller
            except (asyncio.CancelledError, Exception):
                pass
        if view is not None:
            view.stop()
        if hall is not None:
            await hall.close()
        for p in ports.values():
            p.close()
        for s in reversed(started):
            s.stop()
            if s in _LIVE_SERVICES:
                _LIVE_SERVICES.remove(s)
        await sink.stop()
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


async def _mark_outage(hall: Hall, snap: Snapshot, outage: tuple[float, float]) -> None:
    await asyncio.sleep(max(0.0, hall.started + outage[0] - time.monotonic()))
    hall.note(f"故障 fault: 省平台停机 province outage for {outage[1]:.0f} s")
    snap.outage = "省平台停机 PROVINCE OUTAGE"
    await asyncio.sleep(outage[1])
    snap.outage = ""
    hall.note("省平台恢复 province back")


def print_summary(console: Console, s: dict) -> None:
    """The human summary, Chinese with English beside."""
    lat = s["latency_ms"]
    ok = s["lost"] == 0 and s.get("drained", True)
    o = s["press_outcomes"]
    lines = [
        ("评价器 devices", s["devices"]),
        ("办件 cases reported", s["cases"]),
        ("受理的按键 presses accepted (journal written → 谢谢)", s["presses"]),
        ("  去向 outcome: 上传/未绑定/暂存/丢失 uploaded/unbound/parked/lost",
         f"{o['uploaded']} / {o['unbound']} / {o['parked']} / {o['lost']}"),
        ("代理已存储 ratings stored at the agent", s["ratings_stored"]),
        ("  已绑定 bound to a case", s["bound"]),
        ("省平台已确认（去重） uploaded, unique at the province", s["uploaded_unique"]),
        ("省平台重复提交（已去重） duplicates the province absorbed", s["province_duplicates"]),
        ("未绑定（保留，不上传） unbound, kept not uploaded", s["unbound"]),
        ("丢失 lost", s["lost"]),
        ("延迟 latency press → province p50 / p99 (ms)",
         f"{lat['p50']} / {lat['p99']}"),
        ("差评 bad ratings (levels 4–5)", s["bad_ratings"]),
        ("差评告警 alerts raised / delivered", f"{s['alerts']} / {s.get('alerts_delivered', '-')}"),
    ]
    wa = s.get("waiting_area")
    if wa and wa.get("devices"):
        lines.append(("等候区评价 waiting area: presses / bound to a case",
                      f"{wa['presses']} / {wa['bound']}"))
    if s.get("agent_url"):
        lines.append(("代理地址 agent", s["agent_url"]))
    if s.get("faults"):
        lines.append(("故障 faults injected", ", ".join(s["faults"])))
    if s.get("stored_not_shown"):
        lines.append(("断电前已写入未显示 stored but cut before 谢谢 showed",
                      s["stored_not_shown"]))
    if s.get("console_url"):
        lines.append(("控制台 console (用户 user / 密码 password)",
                      f"{s['console_url']}  ({s['console_user']} / {s['console_password']})"))
    console.rule("[bold]汇总 summary")
    table = Table(box=None, show_header=False, padding=(0, 2))
    table.add_column(no_wrap=False)
    table.add_column(no_wrap=False)
    for k, v in lines:
        table.add_row(k, str(v))
    console.print(table)
    if ok:
        console.print("[bold green]无丢失 nothing lost[/]: 每个显示“谢谢”的评价都已到达省平台"
                      "或可见地保留 — every press the devices accepted reached the province "
                      "or is visibly kept with its reason.")
    else:
        console.print(f"[bold red]有问题 PROBLEM[/]: lost {s['lost']}, drained "
                      f"{s.get('drained')}; see lost_detail in --json output.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hcp demo`; returns the exit code."""
    args = parse_args(_parser(), argv)
    if isinstance(args, int):
        return args
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)      # CI logs: no 80-column wrapping of the summary
    if args.devices < 1 or args.duration <= 0 or args.waiting_area < 0 or args.hold < 0 \
            or not 0 <= args.waiting_share <= 1:
        console.print("参数错误 bad option: --devices ≥ 1, --duration > 0, --waiting-area ≥ 0, "
                      "--hold ≥ 0")
        return 2
    if args.runtime == "micropython":
        from .mpy_device import missing as mpy_missing
        if mpy_missing():
            console.print(f"[red]无法运行 cannot run[/]: {mpy_missing()}", highlight=False)
            return 2
    if args.link == "mqtt":
        missing = services.mosquitto_missing()
        if missing:
            console.print(f"[red]无法运行 MQTT 演示 MQTT demo unavailable[/]: {missing}",
                          highlight=False)
            return 2

    done: list[dict] = []

    def emit(summary: dict) -> None:
        """Summary on the terminal and in --json: before a --hold, so both are there to read
        while the hall keeps running."""
        done.append(summary)
        print_summary(console, summary)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, ensure_ascii=False, indent=1),
                                       encoding="utf-8")
            console.print(f"JSON: {args.json}")

    async def guarded() -> dict:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        except (NotImplementedError, RuntimeError):
            pass
        return await run(args, console, on_summary=emit)

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("已中断，所有服务已停止 interrupted; everything started was stopped")
        if not done:
            return 130          # stopped before the summary; during --hold the run counts
    except services.ServiceError as exc:
        console.print(f"[red]启动失败 could not start[/]: {exc}", highlight=False)
        return 2
    summary = done[0]
    return 0 if summary["lost"] == 0 and summary.get("drained") else 1


if __name__ == "__main__":
    raise SystemExit(main())
