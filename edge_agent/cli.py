"""`hcp agent ...`: run the hall agent and look after it. Library and CLI share one core.

  hcp agent run --config hall.toml
  hcp agent check-config --config hall.toml
  hcp agent status --config hall.toml [--json]
  hcp agent devices --config hall.toml [--json]
  hcp agent outbox list [--failed] --config hall.toml [--json]
  hcp agent outbox retry (ID | --all) --config hall.toml
  hcp agent unbound --config hall.toml [--json]
  hcp agent export --from 2026-11-01 --to 2026-11-30 [--format csv|json] [--out F] --config ...
  hcp agent user add NAME --role supervisor|technician|window [--window A01] [--staff-id S001]
  hcp agent user passwd NAME | user disable NAME | user list      (console accounts)
  hcp agent client add erp-1 --windows A01,A02 [--kind business|queue] --config hall.toml
  hcp agent client list [--json] --config hall.toml
  hcp agent client remove erp-1 --config hall.toml

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
    _user_parser(sub, common)
    cl = sub.add_parser("client", help="上报客户端（业务系统、排队叫号） intake clients: business "
                                       "and queue systems")
    cls = cl.add_subparsers(dest="client_cmd", required=True)
    ca = cls.add_parser("add", parents=[common], help="添加客户端并生成密钥（只显示一次） add a "
                        "client and make its key (shown once)",
                        epilog="example: hcp agent client add erp-1 --windows A01,A02 "
                               "--config /etc/hcp/hall.toml")
    ca.add_argument("id", help="client id (letters, digits, . _ -)")
    ca.add_argument("--kind", choices=("business", "queue"), default="business",
                    help="business: POST /v1/cases; queue: POST /v1/queue/events")
    w = ca.add_mutually_exclusive_group(required=True)
    w.add_argument("--windows", help="可上报的窗口 windows it may report for, e.g. A01,A02")
    w.add_argument("--all-windows", action="store_true", help="所有窗口 every window")
    ca.add_argument("--rate-per-min", type=int, default=600, help="速率限制 requests a minute "
                    "(600)")
    clist = cls.add_parser("list", parents=[common], help="列出客户端 list clients",
                           epilog="example: hcp agent client list --config /etc/hcp/hall.toml")
    clist.add_argument("--json", action="store_true")
    cr = cls.add_parser("remove", parents=[common], help="删除客户端及其密钥 remove a client and "
                        "its key", epilog="example: hcp agent client remove erp-1 --config "
                                          "/etc/hcp/hall.toml")
    cr.add_argument("id")
    return p


def _user_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    us = sub.add_parser("user", help="控制台账号 console accounts (argon2 password hashes)")
    uss = us.add_subparsers(dest="user_cmd", required=True)
    ua = uss.add_parser("add", parents=[common], help="新增账号 add an account; the password "
                        "is read from the terminal or $HCP_CONSOLE_PASSWORD",
                        epilog="example: hcp agent user add zhangsan --role window --window A01 "
                               "--staff-id S001 --name 张三 --config hall.toml")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=("supervisor", "technician", "window"),
                    help="管理员 supervisor / 技术员 technician / 窗口人员 window")
    ua.add_argument("--name", default="", help="显示姓名 display name")
    ua.add_argument("--window", help="窗口编号 window id (window staff)")
    ua.add_argument("--staff-id", help="工号 staff number (window staff, optional)")
    up = uss.add_parser("passwd", parents=[common], help="修改密码 set a new password (ends "
                        "the account's sessions)",
                        epilog="example: hcp agent user passwd zhangsan --config hall.toml")
    up.add_argument("username")
    ud = uss.add_parser("disable", parents=[common], help="停用账号 disable an account (ends "
                        "its sessions at once)",
                        epilog="example: hcp agent user disable zhangsan --config hall.toml")
    ud.add_argument("username")
    ud.add_argument("--enable", action="store_true", help="重新启用 re-enable instead")
    ul = uss.add_parser("list", parents=[common], help="列出账号 list accounts",
                        epilog="example: hcp agent user list --config hall.toml")
    ul.add_argument("--json", action="store_true")


def _password(prompt: str) -> str:
    """The new password: $HCP_CONSOLE_PASSWORD (scripts), else asked twice on the terminal."""
    env = os.environ.get("HCP_CONSOLE_PASSWORD")
    if env:
        return env
    import getpass
    first = getpass.getpass(prompt)
    if getpass.getpass("再输入一次 again: ") != first:
        raise ValueError("两次输入的密码不一致 the passwords differ")
    return first


def _user_cmd(args: Any, cfg: Config, db: Any) -> int:
    """`hcp agent user ...`: the console's own account core (edge_agent.console.accounts)."""
    from .console import accounts
    try:
        if args.user_cmd == "list":
            rows = accounts.list_users(db)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            else:
                _print_table(rows, ["username", "displayName", "role", "window", "staffId",
                                    "disabled"])
            return 0
        if args.user_cmd == "add":
            pw = _password("新密码 password: ")
            with db.atomic():
                accounts.add_user(db, args.username, pw, args.role, args.name, args.window,
                                  args.staff_id, {w.id for w in cfg.windows})
            print(f"已新增账号 added {args.username} ({args.role})")
        elif args.user_cmd == "passwd":
            pw = _password("新密码 new password: ")
            with db.atomic():
                accounts.set_password(db, args.username, pw)
            print(f"已修改密码 password changed for {args.username}; its sessions ended")
        elif args.user_cmd == "disable":
            with db.atomic():
                accounts.set_disabled(db, args.username, not args.enable)
            print(f"{'已启用 enabled' if args.enable else '已停用 disabled'} {args.username}")
        return 0
    except (accounts.AccountError, ValueError) as exc:
        _err(f"账号操作失败 {exc}")
        return 1


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _load(path: str) -> Config:
    return load_config(path)


def _db(cfg: Config, create: bool = False):
    from .store import open_database
    if not create and not Path(cfg.storage).exists():
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


def _profile_lines(cfg: Config) -> list[str]:
    """What the configured profile needs (all present, or config loading would have failed)
    and the settings it will use — never a secret."""
    from .upstream.registry import get_profile
    from .upstream.worker import endpoint
    profile = get_profile(cfg.upstream.profile)
    lines = [f"档案 profile {profile.name}, auth {cfg.upstream.auth}"]
    if profile.needs:
        lines.append("需要 needs: " + "; ".join(f"{key} ({why}) ✓" for key, _, why in
                                                profile.needs))
    lines += [f"{kind} → POST {endpoint(cfg, kind)}" for kind in profile.paths]
    return lines + profile.describe(cfg.upstream)


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
        for line in _profile_lines(cfg):
            print("  " + line)
        return 0
    if args.cmd == "run":
        return _run(cfg)
    if args.cmd == "client":
        return _client(args, cfg)
    try:
        # accounts may be set up before the agent's first start: `user` creates the database
        db = _db(cfg, create=args.cmd == "user")
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
    if args.cmd == "user":
        return _user_cmd(args, cfg, db)
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
        if data["serviceRecords"]:
            sv = data["serviceRecords"]
            print(f"服务数据 service records: 待传 pending {sv.get('pending', 0)}, 被拒 parked "
                  f"{sv.get('parked', 0)}, 已确认 done {sv.get('done', 0)}")
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
            _print_table(rows, ["deviceId", "window", "role", "online", "lastSeen", "firmware",
                                "clock", "backlog", "cumAck", "ratingsStored", "hellos",
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


def _client(args: Any, cfg: Config) -> int:
    """`hcp agent client add|list|remove`: one library call each (edge_agent/clients.py)."""
    from .clients import ClientError, add_client, remove_client
    try:
        if args.client_cmd == "add":
            windows = ["*"] if args.all_windows else [
                w.strip() for w in args.windows.split(",") if w.strip()]
            client, key = add_client(args.config, args.id, args.kind, windows,
                                     args.rate_per_min)
            print(f"已添加客户端 client added: {client.id} ({client.kind}), windows "
                  f"{', '.join(client.windows)}, {client.rate_per_min}/min")
            print(f"密钥文件 key file: {client.key_file} (0600)")
            print(f"密钥（只显示这一次，交给该系统的管理员） key — shown this once, give it to "
                  f"that system's administrator:\n{key}")
            print("运行中的代理几秒内生效 a running agent accepts it within seconds; "
                  "signing: edge_agent/README.md \"Authenticated intake\"")
            return 0
        if args.client_cmd == "remove":
            client = remove_client(args.config, args.id)
            print(f"已删除客户端及密钥 removed client {client.id} and its key file; a running "
                  "agent refuses it within seconds")
            return 0
    except ClientError as exc:
        _err(f"客户端操作失败 client command failed: {exc}")
        return 1
    rows = [{"id": c.id, "kind": c.kind, "windows": ",".join(c.windows),
             "ratePerMin": c.rate_per_min, "keyFile": c.key_file} for c in cfg.clients]
    if Path(cfg.storage).exists():
        import time as _time
        from . import intake_audit
        from .store import connect
        import sqlite3
        db = connect(cfg.storage, readonly=True)
        try:
            activity = intake_audit.client_activity(db, _time.time() - 86400)
        except sqlite3.Error:      # an agent that has not migrated yet: no audit to show
            activity = {}
        finally:
            db.close()
        for r in rows:
            a = activity.get(r["id"], {})
            r["reports24h"] = sum(a.get("outcomes", {}).values())
            r["lastReport"] = _iso(a.get("last"))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        _print_table(rows, ["id", "kind", "windows", "ratePerMin", "reports24h", "lastReport",
                            "keyFile"])
    return 0


def _iso(ts: float | None) -> str | None:
    from .binding import hall_time
    return hall_time(ts) if ts else None


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
