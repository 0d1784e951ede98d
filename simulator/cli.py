"""`hcp sim`: virtual evaluators (the real firmware, under CPython or `--runtime micropython`)
against a running agent.

    hcp sim --agent hall.toml [--devices N] [--link serial|mqtt] [--duration 60]
            [--faults all|power-cut,unplug,noise,clock-skew] [--json out.json]
    hcp sim --agent http://127.0.0.1:8470 --config hall.toml ...

The devices are the `[[devices]]` of the agent's hall.toml (the first N, of the given link):
the same ids, windows and key files. A serial device gets a pty pair whose slave is symlinked at
the device's `port` path (so that path must be free or a symlink we may replace — never a real
port); an MQTT device logs in to `[broker]` as its id, with the password from
`--mqtt-passwords FILE` (JSON {"1002": "..."}) if the broker needs one. Scripted staff post each
served citizen's case to the agent's `/v1/cases`, signed as the first business client of
hall.toml's [[clients]]; the first queue client (if any) reports the citizens' tickets. Broker
restarts need a broker this program owns: use `hcp demo --link mqtt --faults`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import faults as fmod, rundir
from .citizens import CitizenProfile
from .device import device_class, provision
from .hall import Hall
from .ptyport import PtyPort
from tools.hcp import parse_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hcp sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", required=True,
                   help="代理的 hall.toml，或其 HTTP 地址（此时需 --config） the agent's hall.toml, "
                        "or its URL together with --config")
    p.add_argument("--config", help="hall.toml when --agent is a URL")
    p.add_argument("--devices", type=int, default=0, help="设备数，0=全部 devices (0 = all)")
    p.add_argument("--link", choices=("serial", "mqtt"), help="只用该链路的设备 only devices "
                                                               "on this link")
    p.add_argument("--duration", type=float, default=60.0, help="秒 seconds of session (60)")
    p.add_argument("--arrival", type=float, default=5.0,
                   help="平均到达间隔秒 mean seconds between citizens per window (5)")
    p.add_argument("--walk-away", type=float, default=0.08, help="不评价离开概率 (0.08)")
    p.add_argument("--double-press", type=float, default=0.08, help="连按两次概率 (0.08)")
    p.add_argument("--unsolicited", type=float, default=0.03,
                   help="无邀请按键（每秒）概率 unsolicited presses per idle second (0.03)")
    p.add_argument("--levels", default="1=55,2=20,3=10,4=10,5=5",
                   help="满意度分布 level weights, e.g. 1=55,2=20,3=10,4=10,5=5")
    p.add_argument("--faults", default="", help="all 或 or " + ",".join(fmod.KINDS))
    p.add_argument("--mqtt-passwords", help="JSON {device id: broker password}")
    p.add_argument("--run-dir", help="设备目录（保留） keep device folders here")
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="固件运行时 firmware runtime: cpython (in this process, default) or "
                        "micropython (one unix-port process per device)")
    p.add_argument("--json", metavar="PATH", help="write the device-side numbers as JSON")
    return p


def parse_levels(text: str) -> dict[int, float]:
    """`1=55,2=20,...` -> {1: 55.0, ...} (ValueError naming the problem)."""
    out: dict[int, float] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        try:
            level, weight = int(k), float(v)
        except ValueError:
            raise ValueError(f"--levels {part!r}: use LEVEL=WEIGHT, e.g. 1=55") from None
        if not sep or level not in range(1, 6) or weight < 0:
            raise ValueError(f"--levels {part!r}: level 1..5, weight ≥ 0")
        out[level] = weight
    if not out or sum(out.values()) <= 0:
        raise ValueError("--levels: at least one positive weight")
    return out


def _port_path_usable(path: Path) -> bool:
    """Only a free path or a symlink (ours from an earlier run) may become a pty link."""
    return path.is_symlink() or not path.exists()


async def simulate(args: argparse.Namespace, console: Console) -> dict:
    """Run the virtual devices; returns device-side numbers."""
    from edge_agent.config import load_config

    cfg_path = args.config or args.agent
    if args.agent.startswith(("http://", "https://")):
        if not args.config:
            raise ValueError("--agent 是地址时需要 --config hall.toml (the devices, keys and "
                             "ports come from the agent's configuration)")
        agent_url = args.agent
    else:
        agent_url = ""
    cfg = load_config(cfg_path)
    if not agent_url:
        if cfg.listen_port == 0:
            raise ValueError("hall.toml listens on port 0: give the agent's URL with --agent "
                             "URL --config hall.toml")
        host = "127.0.0.1" if cfg.listen_host in ("0.0.0.0", "::") else cfg.listen_host
        agent_url = f"http://{host}:{cfg.listen_port}"
    kinds = fmod.parse_kinds(args.faults)
    if "broker-restart" in kinds:
        raise ValueError("broker-restart: hcp sim does not own the broker; use "
                         "`hcp demo --link mqtt --faults`")
    devs = [d for d in cfg.devices if args.link is None or d.link == args.link]
    if args.devices:
        devs = devs[:args.devices]
    if not devs:
        raise ValueError("hall.toml 中没有匹配的设备 no matching [[devices]] in " + str(cfg_path))
    passwords = {}
    if args.mqtt_passwords:
        passwords = {str(k): v for k, v in json.loads(Path(args.mqtt_passwords).read_text())
                     .items()}
    own_dir = args.run_dir is None
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="hcp-sim-")).resolve()
    phrases = rundir.phrases()
    skew_at = fmod.skewed_device(kinds, len(devs))
    devices: list = []
    hall: Hall | None = None
    try:
        for i, d in enumerate(devs):
            key = Path(d.key_file).read_bytes()
            from firmware.config import parse_key
            key = parse_key(key)
            root = run_dir / "devices" / str(d.id)
            if not (root / "config.json").exists():
                mqtt = None
                if d.link == "mqtt":
                    if cfg.broker is None:
                        raise ValueError("MQTT devices need [broker] in hall.toml")
                    mqtt = {"host": cfg.broker.host, "port": cfg.broker.port,
                            "password": passwords.get(str(d.id), "")}
                provision(root, d.id, key, cfg.hall.hall_code, d.link, mqtt=mqtt, role=d.role)
            port = None
            if d.link == "serial":
                path = Path(d.port or "")
                if not _port_path_usable(path):
                    raise ValueError(f"devices[{d.id}].port {path} 已存在且不是符号链接 exists and "
                                     "is not a symlink: point it at a free path for the simulator")
                path.parent.mkdir(parents=True, exist_ok=True)
                port = PtyPort(path)
            skew = fmod.SKEW_PPM if i == skew_at else 0.0
            devices.append(device_class(args.runtime)(root, d.window, port, phrases,
                                                      skew_ppm=skew, seed=args.seed * 100 + i))
        profile = CitizenProfile(arrival_s=args.arrival, walk_away=args.walk_away,
                                 double_press=args.double_press, unsolicited=args.unsolicited,
                                 levels=parse_levels(args.levels))
        plan = fmod.schedule(kinds, args.duration, len(devices),
                             "mqtt" if all(d.port is None for d in devices) else "serial")
        business = next((c for c in cfg.clients if c.kind == "business"), None)
        queue = next((c for c in cfg.clients if c.kind == "queue"), None)
        if business is None:
            raise ValueError("hall.toml 没有业务系统客户端 no business client in [[clients]]: "
                             "add one with `hcp agent client add ID --kind business "
                             "--all-windows`")
        hall = Hall(devices, agent_url, profile, seed=args.seed, faults=plan,
                    run_id=time.strftime("%m%d%H%M%S"), business=(business.id, business.key),
                    queue=(queue.id, queue.key) if queue is not None else None)
        await hall.start()
        console.print(f"虚拟评价器 {len(devices)} virtual evaluators → agent {agent_url}")
        if not await hall.wait_online(30):
            console.print("[yellow]警告 warning[/]: not every device has a session yet "
                          "(check the agent's log and the device keys)")
        last = 0
        play = asyncio.create_task(hall.play(args.duration))
        while not play.done():
            await asyncio.sleep(0.5)
            for at, text in list(hall.events):
                if at > last:
                    console.print(f"  · {text}", highlight=False)
                    last = at
        await play
        drained = await hall.drain(args.drain_timeout)
        per = [{"deviceId": d.device_id, "window": d.window or "waiting", "presses": len(d.accepted),
                "backlog": d.backlog, "boots": d.boots, "powerCuts": d.power_cuts,
                "accepted": [a.rseq for a in d.accepted]}
               for d in devices]
        c = hall.counters
        return {"devices": len(devices), "cases": c.cases, "case_errors": c.case_errors,
                "presses": len(hall.accepted()), "button_presses": hall.button_presses(),
                "citizens": c.citizens, "walk_aways": c.walk_aways,
                "double_presses": c.double_presses, "unsolicited_presses": c.unsolicited,
                "drained": drained, "faults": hall.fault_log, "per_device": per}
    finally:
        if hall is not None:
            await hall.close()
        else:
            for d in devices:
                if d.port is not None:
                    d.port.close()
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


def sim_main(argv: list[str] | None = None) -> int:
    """Entry point of `hcp sim`; returns the exit code."""
    args = parse_args(_parser(), argv)
    if isinstance(args, int):
        return args
    console = Console()

    async def guarded() -> dict:
        task = asyncio.current_task()
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        except (NotImplementedError, RuntimeError):
            pass
        return await simulate(args, console)

    try:
        out = asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("已中断 interrupted")
        return 130
    except ValueError as exc:
        console.print(f"[red]hcp sim: 参数错误 bad option[/]: {exc}", highlight=False)
        return 2
    except Exception as exc:
        from edge_agent.config import ConfigError
        if isinstance(exc, ConfigError):
            console.print(f"[red]hcp sim: 配置错误 config error[/]: {exc}", highlight=False)
            return 2
        raise
    t = Table(title="虚拟评价器 virtual evaluators")
    for col in ("device", "window", "presses 受理", "backlog 积压", "boots 启动", "power cuts"):
        t.add_column(col)
    for d in out["per_device"]:
        t.add_row(str(d["deviceId"]), d["window"], str(d["presses"]), str(d["backlog"]),
                  str(d["boots"]), ", ".join(d["powerCuts"]))
    console.print(t)
    console.print(f"办件 cases {out['cases']} (errors {out['case_errors']}), 受理按键 presses "
                  f"{out['presses']}, 积压清空 drained {out['drained']}", highlight=False)
    if args.json:
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=1))
    return 0 if out["drained"] and not out["case_errors"] else 1
