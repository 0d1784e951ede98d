"""A generated hall in a run directory: device keys, provisioned device folders, pty symlink
paths, MQTT passwords, and the agent's `hall.toml` naming all of it — nothing to configure.

    run_dir/
      hall.toml                    the agent's configuration (generated)
      keys/1001.key                the agent's copy of each device key
      clients/demo-biz.key         intake keys of the hall's business and queue systems
      devices/1001/                each device's own "flash": config.json, device.key,
                                   journal/, and catalogue.bin once the agent pushed it
      dev/ttyHCP1001               serial devices: stable symlink to the pty slave
      agent.db, province.sqlite3, *.log

All values are synthetic. The devices start without a reason-tag catalogue: the agent pushes the
placeholder seed-0 catalogue (edge_agent/deploy/catalogue.seed-0.json) to each one in CONFIG
frames after its first HELLO, as in a real hall.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from . import device as vdev

HALL_CODE = "DEMO01"
AREA = "371402"
CATALOGUE_JSON = (Path(__file__).resolve().parent.parent / "edge_agent" / "deploy"
                  / "catalogue.seed-0.json")
WINDOW_NAMES = ("综合受理一号窗", "综合受理二号窗", "社保医保窗", "不动产窗", "市场准入窗",
                "公积金窗", "税务窗", "户政窗", "出入境窗", "交通窗")


BUSINESS_CLIENT = "demo-biz"      # the windows' business system (POST /v1/cases)
QUEUE_CLIENT = "demo-queue"       # the queue system (POST /v1/queue/events)


@dataclass
class DeviceSpec:
    device_id: int
    window: str | None                # None: a waiting-area evaluator
    window_name: str
    root: Path
    link: str
    port_path: Path | None
    mqtt_password: str = ""
    role: str = "window"


def phrases() -> dict:
    """The firmware's Chinese phrase bitmaps (tools/firmware_build.py), {} without a font."""
    try:
        from firmware.display import parse_pack
        from tools.firmware_build import phrase_pack
        return parse_pack(phrase_pack())
    except Exception:
        return {}


def make_devices(run_dir: Path, n: int, link: str, broker_port: int | None = None,
                 flow: dict | None = None, first_id: int = 1001, waiting_area: int = 0
                 ) -> list[DeviceSpec]:
    """Keys, device folders and port paths for `n` devices at windows A01..An, then
    `waiting_area` evaluators in the waiting area (no window, a ticket/receipt scanner)."""
    (run_dir / "keys").mkdir(parents=True, exist_ok=True)
    (run_dir / "dev").mkdir(exist_ok=True)
    specs = []
    for i in range(n + waiting_area):
        did = first_id + i
        key = secrets.token_bytes(32)
        kf = run_dir / "keys" / f"{did}.key"
        kf.write_bytes(key)
        kf.chmod(0o600)
        waiting = i >= n
        window = None if waiting else f"A{i + 1:02d}"
        name = (f"等候区评价器{i - n + 1}（虚拟）" if waiting
                else WINDOW_NAMES[i % len(WINDOW_NAMES)] + "（虚拟）")
        root = run_dir / "devices" / str(did)
        pw = secrets.token_hex(12) if link == "mqtt" else ""
        mqtt = {"host": "127.0.0.1", "port": broker_port, "password": pw,
                "keepalive": 10} if link == "mqtt" else None
        role = "waiting_area" if waiting else "window"
        vdev.provision(root, did, key, HALL_CODE, link, mqtt=mqtt, flow=flow, role=role)
        specs.append(DeviceSpec(did, window, name, root, link,
                                run_dir / "dev" / f"ttyHCP{did}" if link == "serial" else None,
                                pw, role))
    return specs


def make_clients(run_dir: Path) -> dict[str, bytes]:
    """Intake keys for the hall's business system and queue system (files 0600 under
    clients/, as `hcp agent client add` makes them); {client id: key}."""
    d = run_dir / "clients"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = {}
    for cid in (BUSINESS_CLIENT, QUEUE_CLIENT):
        key = secrets.token_bytes(32)
        kf = d / f"{cid}.key"
        kf.write_text(key.hex() + "\n")
        kf.chmod(0o600)
        out[cid] = key
    return out


def write_hall_config(run_dir: Path, specs: list[DeviceSpec], province_url: str,
                      profile: str = "gbt39046-json", webhook_url: str | None = None,
                      broker_port: int | None = None, agent_password: str = "",
                      invite_lifetime_s: int = 20, console_port: int | None = None,
                      upstream_extra: list[str] | None = None) -> Path:
    """The agent's hall.toml for these devices (listen on a free port: it prints the URL)."""
    privacy = secrets.token_hex(32)
    lines = [
        "# 自动生成的演示配置，全部为虚构数据 — generated demo configuration, synthetic values",
        "[hall]", 'name = "演示政务服务中心（虚拟）"', f'area_code = "{AREA}"',
        f'hall_code = "{HALL_CODE}"', "",
        "[agent]", 'storage = "agent.db"', 'listen = "127.0.0.1:0"',
        f"invite_lifetime_s = {invite_lifetime_s}", "binding_window_s = 600",
        'log_level = "warning"', f'catalogue = "{CATALOGUE_JSON}"', ""]
    for s in specs:
        if s.window is not None:
            lines += ["[[windows]]", f'id = "{s.window}"', f'name = "{s.window_name}"', ""]
    for s in specs:
        place = (f'window = "{s.window}"' if s.window is not None
                 else 'role = "waiting_area"')
        lines += ["[[devices]]", f"id = {s.device_id}", place,
                  f'link = "{s.link}"', f'key_file = "keys/{s.device_id}.key"']
        if s.port_path is not None:
            lines.append(f'port = "{s.port_path}"')
        lines.append("")
    if broker_port is not None:
        lines += ["[broker]", 'host = "127.0.0.1"', f"port = {broker_port}",
                  'username = "hcp-agent"', f'password = "{agent_password}"', ""]
    if not (run_dir / "clients" / f"{QUEUE_CLIENT}.key").exists():
        make_clients(run_dir)
    for cid, kind in ((BUSINESS_CLIENT, "business"), (QUEUE_CLIENT, "queue")):
        lines += ["[[clients]]", f'id = "{cid}"', f'kind = "{kind}"',
                  f'key_file = "clients/{cid}.key"', 'windows = ["*"]', "rate_per_min = 6000",
                  ""]
    lines += ["[upstream]", f'profile = "{profile}"', f'url = "{province_url}"',
              "timeout_s = 5", 'data_source = "001"', *(upstream_extra or []), ""]
    if webhook_url:
        lines += ["[alerts]", f'webhook_url = "{webhook_url}"', ""]
    if console_port is not None:
        lines += ["[console]", f'listen = "127.0.0.1:{console_port}"', ""]
    lines += ["[privacy]", f'key = "{privacy}"', ""]
    p = run_dir / "hall.toml"
    p.write_text("\n".join(lines), encoding="utf-8")
    os.chmod(p, 0o600)
    return p
