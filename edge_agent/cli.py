"""`hcp agent ...`: run the hall agent and look after it. Library and CLI share one core.

  hcp agent run --config hall.toml
  hcp agent check-config --config hall.toml
  hcp agent status --config hall.toml [--json]
  hcp agent devices --config hall.toml [--json]
  hcp agent outbox list [--failed] --config hall.toml [--json]
  hcp agent outbox retry (ID | --all) --config hall.toml
  hcp agent unbound --config hall.toml [--json]
  hcp agent export --from 2026-11-01 --to 2026-11-30 [--format csv|json] [--out F] --config ...

Exit codes: 0 ok, 1 operation failed, 2 bad configuration or usage.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, load_config
from tools.hcp import parse_args

DEFAULT_CONFIG = os.environ.get("HCP_AGENT_CONFIG", "/etc/hcp/hall.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hcp agent", description="大厅边缘代理 hall edge agent")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                        help=f"hall.toml (default {DEFAULT_CONFIG}, or $HCP_AGENT_CONFIG)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", parents=[common], help="运行代理 run the agent (systemd: Type=notify)")
    sub.add_parser("check-config", parents=[common], help="检查配置 validate hall.toml")
    for name, text in (("status", "状态 status"), ("devices", "评价器列表 devices"),
                       ("unbound", "未绑定评价 ratings kept without a case")):
        sp = sub.add_parser(name, parents=[common], help=text)
        sp.add_argument("--json", action="store_true", help="JSON output")
    ob = sub.add_parser("outbox", help="上传队列 upload queue")
    obs = ob.add_subparsers(dest="outbox_cmd", required=True)
    ol = obs.add_parser("list", parents=[common], help="未完成的上传 jobs not yet confirmed")
    ol.add_argument("--failed", action="store_true", help="只列被拒绝暂存的 parked only")
    ol.add_argument("--json", action="store_true")
    orr = obs.add_parser("retry", parents=[common], help="重试被拒绝的上传 release parked jobs")
    orr.add_argument("id", nargs="?", type=int, help="job id (from outbox list)")
    orr.add_argument("--all", action="store_true", help="all parked jobs")
    ex = sub.add_parser("export", parents=[common], help="导出评价（评价人信息已脱敏） export, masked")
    ex.add_argument("--from", dest="t_from", required=True, help="YYYY-MM-DD[ HH:MM:SS] (China time)")
    ex.add_argument("--to", dest="t_to", required=True,
                    help="YYYY-MM-DD (inclusive day) or YYYY-MM-DD HH:MM:SS (exclusive)")
    ex.add_argument("--format", choices=("csv", "json"), default="csv")
    ex.add_argument("--out", help="file (default stdout)")
    return p


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _load(path: str) -> Config:
    return load_config(path)


def _db(cfg: Config):
    from .store import open_database
    if not Path(cfg.storage).exists():
        raise FileNotFoundError(cfg.storage)
    return open_database(cfg.storage)


def _parse_day(text: str, end: bool) -> float:
    from .cases import CST
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            dt = datetime.strptime(text, fmt).replace(tzinfo=CST)
        except ValueError:
            continue
        if fmt == "%Y-%m-%d" and end:
            dt += timedelta(days=1)
        return dt.timestamp()
    raise ValueError(text)


def _print_table(rows: list[dict], cols: list[str]) -> None:
    if not rows:
        print("（无 none）")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "") if r.get(c) is not None else "").ljust(widths[c])
                        for c in cols))


def _agent_health(cfg: Config) -> str:
    import urllib.request
    from .service import endpoint_file
    host = "127.0.0.1" if cfg.listen_host in ("0.0.0.0", "::") else cfg.listen_host
    url = f"http://{host}:{cfg.listen_port}"
    try:   # the running agent's own record of where it listens (needed for port 0)
        url = endpoint_file(cfg).read_text().strip()
    except OSError:
        pass
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
            return "running 运行中" if r.status == 200 else f"unhealthy 异常 ({r.status})"
    except Exception:
        return "not reachable 未运行或不可达"


def main(argv: list[str] | None = None) -> int:
    """Entry point for `hcp agent`; returns the exit code."""
    args = parse_args(_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        _err(f"配置错误 config error in {args.config}: {exc.key}: {exc.problem}")
        return 2
    if args.cmd == "check-config":
        print(f"配置正确 config OK: {cfg.hall.name} ({cfg.hall.hall_code}), "
              f"{len(cfg.windows)} windows, {len(cfg.devices)} devices, "
              f"upstream {cfg.upstream.profile}")
        return 0
    if args.cmd == "run":
        return _run(cfg)
    try:
        db = _db(cfg)
    except FileNotFoundError:
        _err(f"数据库不存在 database not found: {cfg.storage} — start the agent first "
             f"(hcp agent run --config {args.config})")
        return 1
    try:
        return _dispatch(args, cfg, db)
    finally:
        db.close()


def _dispatch(args: Any, cfg: Config, db: Any) -> int:
    from . import queries
    if args.cmd == "status":
        data = queries.status(db, {"name": cfg.hall.name, "hallCode": cfg.hall.hall_code,
                                   "areaCode": cfg.hall.area_code})
        data["agent"] = _agent_health(cfg)
        data["upstream"] = {"profile": cfg.upstream.profile, "url": cfg.upstream.url}
        if args.json:
            print(json.dumps(data, ensure_ascii=False, indent=2))
            return 0
        o = data["outbox"]
        print(f"大厅 hall: {cfg.hall.name} ({cfg.hall.hall_code})  代理 agent: {data['agent']}")
        print(f"上传 upload ({cfg.upstream.profile}): 待传 pending {o['pending']}, "
              f"被拒 parked {o['parked']}, 已确认 done {o['done']}, "
              f"最早待传 oldest pending {data['oldestPendingAgeS']} s")
        d = data["devices"]
        print(f"评价器 devices: 在线 online {d['online']}/{d['configured']}"
              + (f", 握手被拒 HELLO refused: replayed {d['helloReplays']}, limited "
                 f"{d['helloLimited']} (hcp agent devices)"
                 if d["helloReplays"] or d["helloLimited"] else ""))
        print(f"评价 ratings by level: {data['ratings']}  未绑定 unbound: {data['unbound']}")
        print(f"差评告警 alerts: {data['alerts']}  办件 cases: {data['cases']}")
        return 0
    if args.cmd == "devices":
        rows = queries.devices(db)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            for r in rows:
                r["firmware"] = r["info"].get("firmware", "")
                r["backlog"] = r["info"].get("backlog", "")
                r["clock"] = r["info"].get("clock", "")
                r["hellos"] = r["hello"]["accepted"]
                r["helloRefused"] = queries.hello_summary(r["hello"])
            _print_table(rows, ["deviceId", "window", "online", "lastSeen", "firmware", "clock",
                                "backlog", "cumAck", "ratingsStored", "hellos",
                                "helloRefused"])
        return 0
    if args.cmd == "unbound":
        rows = queries.unbound_ratings(db)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            _print_table(rows, ["ratingId", "level", "assessTime", "unboundReason"])
        return 0
    if args.cmd == "outbox":
        if args.outbox_cmd == "list":
            rows = queries.outbox_list(db, failed_only=args.failed)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            else:
                _print_table(rows, ["id", "ratingId", "projectNo", "state", "attempts", "nextAt",
                                    "lastError"])
            return 0
        if args.id is None and not args.all:
            _err("用法 usage: hcp agent outbox retry ID | --all")
            return 2
        n = queries.retry_parked(db, None if args.all else args.id)
        print(f"已重新排队 released {n} job(s); the running agent picks them up within 5 s")
        return 0 if n or args.all else 1
    if args.cmd == "export":
        try:
            t_from, t_to = _parse_day(args.t_from, False), _parse_day(args.t_to, True)
        except ValueError as exc:
            _err(f"日期格式错误 bad date {exc}: use YYYY-MM-DD or 'YYYY-MM-DD HH:MM:SS'")
            return 2
        rows = queries.export_rows(db, t_from, t_to)
        if args.format == "json":
            text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
        else:
            buf = io.StringIO()
            cols = list(rows[0]) if rows else ["ratingId"]
            w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            text = buf.getvalue()
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"已导出 exported {len(rows)} ratings to {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    return 2


def _run(cfg: Config) -> int:
    from .logs import setup_logging
    from .service import serve
    setup_logging(cfg.log_level)

    def listening(url: str) -> None:
        print(f"listening {url}", flush=True)
    try:
        asyncio.run(serve(cfg, on_listening=listening))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        _err(f"代理启动失败 agent failed: {type(exc).__name__}: {exc}")
        return 1
    return 0
