"""`hcp`: one command, one subcommand per part of the system.

Each subcommand lives with the code it drives and is imported only when used, so `hcp province`
does not pay for the agent's imports and a missing optional part names itself clearly.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help). The function takes argv (list[str]) and
# returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("edge_agent.cli", "main", "hall edge agent 大厅边缘代理 (run, status, outbox, export)"),
    "sim": ("simulator.cli", "sim_main", "virtual evaluators 虚拟评价器"),
    "demo": ("simulator.demo", "main", "end-to-end demo on one machine 一键演示"),
    "province": ("simulator.province.cli", "main", "province reference server 省级平台参考服务"),
    "firmware": ("tools.firmware_cli", "main", "build firmware, preview catalogue 固件构建"),
    "device": ("tools.device_cli", "main", "provision, list, inspect, retire devices 设备开通与管理"),
}


def parse_args(parser, argv: list[str] | None):
    """`parser.parse_args(argv)` for a subcommand, without exiting the process: returns the
    Namespace, or the exit code (0 after --help, 2 after a usage error argparse already printed).
    Every `hcp` subcommand uses this so the library entry points can be called from tests."""
    try:
        return parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2


def usage() -> str:
    lines = ["usage: hcp <command> [options]", "", "commands:"]
    for name, (_, _, text) in SUBCOMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("`hcp <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `hcp <command> ...` to the module that owns the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"hcp: 未知命令 unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"hcp {name}: 尚未实现 not implemented yet in this version ({module_name})",
                  file=sys.stderr)
            return 3
        raise
    result = getattr(module, func_name)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
