"""`hcp device ...`: provision evaluators and look after them.

  hcp device provision --dev-id ID (--window W | --waiting-area) --port PORT [--agent-config hall.toml]
                       [--key-file F] [--dry-run DIR] [--build DIR] [--link serial|mqtt]
                       [--link-port P] [--keys-dir D] [--device-json F]
                       [--no-wait | --wait-timeout S]
  hcp device list    [--agent-config hall.toml] [--json]
  hcp device inspect --dev-id ID [--agent-config hall.toml]
  hcp device retire  --dev-id ID [--agent-config hall.toml] --yes

The agent config defaults to $HCP_AGENT_CONFIG or /etc/hcp/hall.toml (as `hcp agent`).
Exit codes: 0 ok, 1 failed (the message says what to check), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from edge_agent.cli import DEFAULT_CONFIG
from tools.hcp import parse_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hcp device", description="评价器开通与管理 provision and "
                                "manage evaluators")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--agent-config", default=DEFAULT_CONFIG,
                        help=f"hall.toml (default {DEFAULT_CONFIG}, or $HCP_AGENT_CONFIG)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("provision", parents=[common], help="开通 give a device its id, key and "
                        "firmware over USB and register it")
    pr.add_argument("--dev-id", type=int, required=True, help="device id (u32 > 0)")
    place = pr.add_mutually_exclusive_group(required=True)
    place.add_argument("--window", help="window id from hall.toml")
    place.add_argument("--waiting-area", action="store_true",
                       help="等候区评价器（扫码，无窗口） a waiting-area evaluator: ticket/receipt "
                            "scanner, no window")
    pr.add_argument("--port", required=True, help="the board's USB serial port (REPL)")
    pr.add_argument("--key-file", type=Path, help="use this key (default: a new random key)")
    pr.add_argument("--dry-run", type=Path, metavar="DIR",
                    help="write what would be copied to DIR; touch neither device nor agent")
    pr.add_argument("--build", type=Path, metavar="DIR",
                    help="a `hcp firmware build` folder (default: build now)")
    pr.add_argument("--link", choices=("serial", "mqtt"), default="serial")
    pr.add_argument("--link-port", help="the agent's serial port for this device's data link "
                    "(default: --port)")
    pr.add_argument("--keys-dir", type=Path, help="agent key store folder (default: where the "
                    "other devices' keys are, else keys/ beside hall.toml)")
    pr.add_argument("--device-json", type=Path, help="extra device settings (wifi, flow …)")
    pr.add_argument("--no-wait", action="store_true", help="do not wait for the first HELLO")
    pr.add_argument("--wait-timeout", type=float, default=60.0, metavar="S")
    ls = sub.add_parser("list", parents=[common], help="列表 devices the agent knows")
    ls.add_argument("--json", action="store_true")
    ins = sub.add_parser("inspect", parents=[common], help="详情 one device")
    ins.add_argument("--dev-id", type=int, required=True)
    rt = sub.add_parser("retire", parents=[common], help="停用 remove a device and revoke its key")
    rt.add_argument("--dev-id", type=int, required=True)
    rt.add_argument("--yes", action="store_true", help="confirm (the key cannot be restored)")
    return p


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `hcp device`; returns the exit code."""
    args = parse_args(_parser(), argv)
    if isinstance(args, int):
        return args
    from tools.provision import ERRORS
    try:
        if args.cmd == "provision":
            return _provision(args)
        if args.cmd == "retire":
            return _retire(args)
        return _show(args)
    except ERRORS as exc:
        _err(f"失败 failed: {exc}")
        return 1
    except OSError as exc:    # hall.toml or the key folder not writable, a folder missing …
        _err(f"失败 failed: {exc.filename or ''}: {exc.strerror or exc} — check the path and its "
             f"permissions (hall.toml and the key folder belong to root: run with sudo)")
        return 1


def _provision(args: argparse.Namespace) -> int:
    from tools.provision import ProvisionOptions, provision
    if not 0 < args.dev_id < 2 ** 32:
        _err("--dev-id 应为 1..4294967295 must be a u32 > 0")
        return 2
    opts = ProvisionOptions(
        dev_id=args.dev_id, window=None if args.waiting_area else args.window, port=args.port,
        agent_config=Path(args.agent_config), key_file=args.key_file, dry_run=args.dry_run,
        build_dir=args.build, link=args.link, link_port=args.link_port, keys_dir=args.keys_dir,
        device_json=args.device_json, wait=not args.no_wait, wait_timeout_s=args.wait_timeout)
    return provision(opts, say=lambda s: print(s, flush=True))


def _retire(args: argparse.Namespace) -> int:
    from tools import agent_registry
    if not args.yes:
        _err(f"停用会删除设备 {args.dev_id} 的密钥，无法恢复 retiring deletes the device's key; "
             f"add --yes to confirm")
        return 2
    key_path = agent_registry.retire(args.agent_config, args.dev_id)
    print(f"已停用 retired device {args.dev_id}: removed from {args.agent_config}, key {key_path} "
          f"deleted. Restart the agent (systemctl restart hcp-agent) so it rejects the device's "
          f"frames; its stored ratings are kept.")
    return 0


def device_rows(config_path: str) -> list[dict]:
    """Configured devices merged with what the agent's database knows (no key material)."""
    from tools import agent_registry
    cfg = agent_registry.load(config_path)
    db_rows: dict[int, dict] = {}
    if Path(cfg.storage).exists():
        from edge_agent import queries
        con = sqlite3.connect(f"file:{cfg.storage}?mode=ro", uri=True, timeout=2)
        try:
            for r in queries.devices(con):
                db_rows[r["deviceId"]] = r
        except sqlite3.Error:
            pass   # no tables yet: the agent has not started on this file
        finally:
            con.close()
    rows = []
    for d in cfg.devices:
        r = db_rows.pop(d.id, {})
        info = r.get("info", {})
        try:
            key_state = "ok " + agent_registry.fingerprint(agent_registry.read_key_file(d.key_file))
        except agent_registry.RegistryError:
            key_state = "missing/unreadable"
        rows.append({"deviceId": d.id, "window": d.window, "link": d.link, "port": d.port,
                     "registered": True, "key": key_state, "online": r.get("online", False),
                     "lastSeen": r.get("lastSeen"), "firmware": info.get("firmware"),
                     "backlog": info.get("backlog"), "clock": info.get("clock"),
                     "cumAck": r.get("cumAck"), "ratingsStored": r.get("ratingsStored", 0),
                     "hello": r.get("hello"), "info": info})
    for did, r in sorted(db_rows.items()):   # in the DB but no longer configured: retired
        info = r.get("info", {})
        rows.append({"deviceId": did, "window": r.get("window"), "link": None, "port": None,
                     "registered": False, "key": "revoked", "online": r.get("online", False),
                     "lastSeen": r.get("lastSeen"), "firmware": info.get("firmware"),
                     "backlog": info.get("backlog"), "clock": info.get("clock"),
                     "cumAck": r.get("cumAck"), "ratingsStored": r.get("ratingsStored", 0),
                     "hello": r.get("hello"), "info": info})
    return rows


_COLS = ("deviceId", "window", "registered", "online", "lastSeen", "firmware", "clock", "backlog",
         "key")


def _show(args: argparse.Namespace) -> int:
    rows = device_rows(args.agent_config)
    if args.cmd == "inspect":
        row = next((r for r in rows if r["deviceId"] == args.dev_id), None)
        if row is None:
            _err(f"设备 {args.dev_id} 未知 device {args.dev_id} is neither registered in "
                 f"{args.agent_config} nor known to the agent")
            return 1
        print(json.dumps(row, ensure_ascii=False, indent=2))
        return 0
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("（无设备 no devices）")
        return 0
    table = [[("" if r[c] is None else str(r[c])) for c in _COLS] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(_COLS)]
    print("  ".join(c.ljust(w) for c, w in zip(_COLS, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
