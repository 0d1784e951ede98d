"""Test helpers for the agent's device links: a scripted RL1 device (protocol.Session(DEVICE) +
RecordSender), its two transports (a real pty pair behind a symlink, a real paho MQTT client),
a real Mosquitto broker on a free loopback port, and a hall config with serial + MQTT devices.

The scripted device is deliberately small and independent of firmware/: it journals records in a
dict, sends them with the protocol's RecordSender, frees them on ACK/HELLO_ACK, DACKs downlink
frames, and says HELLO again on an unsigned ERROR no_session/bad_mac or when its HELLO went
unanswered. Like the firmware it counts its HELLOs (`hello_ctr`, SPEC §4.2) and sends STATUS as
the first frame of a session (the agent sends nothing but HELLO_ACK before it). All data is
synthetic.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any, Callable

from protocol import cobs
from protocol import messages as m
from protocol.arq import RecordSender
from protocol.errors import ProtocolError
from protocol.session import DEVICE, Session
from tests.agent_support import PRIVACY_KEY, AREA, clients_toml, write_client_keys

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
HALL = "T01"
AGENT_USER = "hcp-agent"
ACL_FILE = ROOT / "edge_agent" / "deploy" / "mosquitto" / "acl"


def mosquitto_missing() -> str | None:
    if not os.path.exists(MOSQUITTO) or not os.path.exists(MOSQUITTO_PASSWD):
        return "mosquitto not installed (apt-get install mosquitto)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_ms() -> int:
    return int(time.monotonic() * 1000)


# ---------------------------------------------------------------------------------- device


class ScriptedDevice:
    """An RL1 evaluator reduced to its protocol behaviour (runs on the test's event loop)."""

    def __init__(self, device_id: int, key: bytes, boot: int = 1) -> None:
        self.device_id = device_id
        self.key = key
        self.boot = boot
        self.session = Session(device_id, key, DEVICE)
        self.sender = RecordSender()
        self.journal: dict[int, m.Record] = {}
        self.next_rseq = 1
        self.cum = 0
        self.transport: Any = None
        self.acks: list[tuple[int, bytes]] = []
        self.invites: list[dict] = []
        self.cancels: list[int] = []
        self.errors: list[tuple[int, bool]] = []       # (code, signed)
        self.hello_acks = 0
        self.hellos = 0
        self.hello_ctr = 0                             # the device's persisted HELLO counter
        self.on_ack: Callable[[int, bytes], None] | None = None
        self.rejected: list[str] = []
        self.sent_frames: list[bytes] = []             # every frame sent (for replay tests)
        self.paused = False                            # stop sending records (still answers)
        self.confirm = True                            # send STATUS right after HELLO_ACK
        self._hello_at: int | None = None
        self._task: asyncio.Task | None = None

    # -- journal -------------------------------------------------------------------------
    def press(self, level: int = 1, invite_id: int = 0) -> m.Record:
        """A citizen's press, durably journaled (D-1) before it is ever sent."""
        flags = 0 if invite_id else m.REC_UNSOLICITED
        r = m.Record(self.next_rseq, int(time.time()), invite_id, 1, level, flags, ())
        self.journal[r.rseq] = r
        self.next_rseq += 1
        return r

    @property
    def low(self) -> int:
        return min(self.journal) if self.journal else self.next_rseq

    @property
    def established(self) -> bool:
        return self.session.established and self._hello_at is None

    # -- sending -------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sent_frames.append(data)
        if self.transport is not None:
            self.transport.send(data)

    def say_hello(self) -> None:
        self.hellos += 1
        self.hello_ctr += 1
        self._hello_at = now_ms()
        self.send(self.session.hello(os.urandom(8), {
            "fw": b"\x00\x01\x00", "boot": self.boot, "uptime": 5, "cat_version": 1,
            "low": self.low, "next_rseq": self.next_rseq, "status": m.ST_CLOCK_SYNCED,
            "hello_ctr": self.hello_ctr}))

    def status_fields(self) -> dict:
        return {"status": m.ST_CLOCK_SYNCED, "ui_state": 0, "boot": self.boot, "uptime": 5,
                "low": self.low, "next_rseq": self.next_rseq, "unacked": len(self.journal),
                "capacity": 50000, "cat_version": 1, "last_error": 0}

    def seal(self, type: int, fields: dict) -> bytes:
        return self.session.seal(type, fields)[1]

    def step(self) -> None:
        now = now_ms()
        if self._hello_at is not None:
            if now - self._hello_at > 1000:
                self.say_hello()
            return
        if not self.session.established or self.paused:
            return
        low = self.low
        for batch in self.sender.poll(now, low, self.next_rseq - 1):
            recs = [self.journal[r] for r in batch if r in self.journal]
            self.send(self.seal(m.RECORDS, {"low": low, "records": recs}))

    async def run(self, interval: float = 0.02) -> None:
        while True:
            self.step()
            await asyncio.sleep(interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # -- receiving -----------------------------------------------------------------------
    def _free(self, cum: int) -> None:
        for r in [r for r in self.journal if r <= cum]:
            del self.journal[r]
        self.cum = max(self.cum, cum)

    def on_frame(self, data: bytes) -> None:
        try:
            f, t, fields = self.session.open(data)
        except ProtocolError as exc:
            self.rejected.append(exc.reason)
            return
        if t == m.HELLO_ACK:
            self.hello_acks += 1
            self._hello_at = None
            self.sender.reset(fields["cum"], fields["window"])
            self._free(fields["cum"])
            if self.confirm:
                self.send(self.seal(m.STATUS, self.status_fields()))   # confirms the session
        elif t == m.ACK:
            if self.on_ack is not None:
                self.on_ack(fields["cum"], fields["sack"])
            self.acks.append((fields["cum"], fields["sack"]))
            cum = self.sender.on_ack(fields["cum"], fields["sack"], now_ms())
            self._free(cum)
        elif t == m.ERROR:
            self.errors.append((fields["code"], f.mac is not None))
            if f.mac is None and fields["code"] in (m.E_NO_SESSION, m.E_BAD_MAC):
                if self._hello_at is None:
                    self.say_hello()
        elif t in (m.INVITE, m.CANCEL):
            if t == m.INVITE:
                self.invites.append(fields)
            else:
                self.cancels.append(fields["invite_id"])
            self.send(self.seal(m.DACK, {"seq": self.session.rx.highest,
                                         "bitmap": self.session.rx.bitmap32()}))
        else:
            self.on_other(f, t, fields)

    def on_other(self, f: Any, t: int, fields: dict) -> None:
        """A downlink message this scripted device does not act on (subclasses may)."""

    def link_up(self) -> None:
        """Every link (re)connection starts with HELLO (SPEC §4.2)."""
        self.say_hello()


# ---------------------------------------------------------------------------------- serial


class PtyPort:
    """A 'USB serial adapter': a pty pair whose slave is reached through a stable symlink (like
    /dev/serial/by-id/...). The test holds the master end as the device's UART."""

    def __init__(self, link_path: Path) -> None:
        self.link_path = Path(link_path)
        self.master: int | None = None
        self.slave: int | None = None
        self.device: ScriptedDevice | None = None
        self.decoder = cobs.StreamDecoder()
        self.received: list[bytes] = []

    def plug(self, device: ScriptedDevice | None = None) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        tmp = self.link_path.with_name(self.link_path.name + ".tmp")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link_path)
        self.decoder.reset()
        if device is not None:
            self.device = device
            device.transport = self
        asyncio.get_running_loop().add_reader(master, self._readable)

    def unplug(self) -> None:
        if self.master is None:
            return
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = None

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:   # the agent side closed: EIO until it opens again
            return
        for item in self.decoder.feed(data):
            if isinstance(item, bytes):
                self.received.append(item)
                if self.device is not None:
                    self.device.on_frame(item)

    def send(self, frame: bytes) -> None:
        self.write(cobs.wire(frame))

    def write(self, raw: bytes) -> None:
        if self.master is None:
            return
        try:
            os.write(self.master, raw)
        except (BlockingIOError, OSError):
            pass   # nobody reading: the frame is lost, as on a real line


# ---------------------------------------------------------------------------------- MQTT


class MqttDevice:
    """The device's MQTT side: paho client with the device's own credentials."""

    def __init__(self, device: ScriptedDevice, port: int, password: str, hall: str = HALL,
                 username: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.device = device
        device.transport = self
        self.loop = asyncio.get_running_loop()
        did = device.device_id
        self.up = f"hcp/v1/{hall}/{did}/up"
        self.down = f"hcp/v1/{hall}/{did}/down"
        self.state = f"hcp/v1/{hall}/{did}/state"
        self.connects = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-dev-{did}",
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(username or str(did), password)
        c.will_set(self.state, b"offline", qos=1, retain=True)
        c.reconnect_delay_set(0.2, 1)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c
        c.connect_async("127.0.0.1", port, keepalive=10)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            return
        client.subscribe(self.down, qos=1)
        client.publish(self.state, f"online {self.device.boot}".encode(), qos=1, retain=True)
        self.loop.call_soon_threadsafe(self._connected)

    def _connected(self) -> None:
        self.connects += 1
        self.device.link_up()

    def _on_message(self, client, userdata, msg) -> None:
        self.loop.call_soon_threadsafe(self.device.on_frame, bytes(msg.payload))

    def send(self, frame: bytes) -> None:
        self.client.publish(self.up, frame, qos=1)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Broker:
    """A real Mosquitto on a free loopback port, with password file and the shipped ACL."""

    def __init__(self, tmp: Path, users: dict[str, str], acl: Path | None = ACL_FILE,
                 port: int | None = None, conf_lines: tuple[str, ...] = (),
                 log_types: tuple[str, ...] = ("all",), name: str = "mosquitto") -> None:
        """`conf_lines` are appended to the generated mosquitto.conf (e.g. the shipped limits,
        `shipped_limits()`); `log_types` are its `log_type` lines (benchmarks log less)."""
        self.dir = Path(tmp) / name
        self.dir.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.users = users
        self.acl = acl
        self.proc: subprocess.Popen | None = None
        passwd = self.dir / "passwd"
        if len(users) <= 8:
            first = True
            for user, pw in users.items():
                # the documented command (edge_agent/deploy/mosquitto/README.md)
                subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if first else []), "-b", str(passwd),
                                user, pw], check=True, capture_output=True)
                first = False
        else:   # many devices: one plain-text file hashed in place by one mosquitto_passwd -U
            passwd.write_text("".join(f"{u}:{pw}\n" for u, pw in users.items()))
            subprocess.run([MOSQUITTO_PASSWD, "-U", str(passwd)], check=True, capture_output=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false",
                 f"password_file {passwd}", "persistence false", "user root",
                 f"log_dest file {self.dir / 'mosquitto.log'}",
                 *(f"log_type {t}" for t in log_types)]
        if acl is not None:
            lines.append(f"acl_file {acl}")
        lines += conf_lines
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: " + self.proc.stderr.read().decode()[-500:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start listening")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


# ---------------------------------------------------------------------------------- config


def shipped_limits() -> tuple[str, ...]:
    """The queue and in-flight limits of the shipped broker config (deploy/mosquitto), for a
    test broker that should behave like a hall's."""
    keys = ("max_queued_messages", "max_inflight_messages", "max_packet_size")
    conf = (ACL_FILE.parent / "hcp-broker.conf").read_text()
    return tuple(line.strip() for line in conf.splitlines() if line.split(" ")[0] in keys)


def write_links_config(tmp: Path, *, serial_port: Path | None = None,
                       mqtt_devices: tuple[int, ...] = (), broker_port: int | None = None,
                       agent_password: str = "", extra: str = "",
                       waiting_area: tuple[int, ...] = (), serial_id: int = 1001,
                       hall: str = HALL, agent_user: str = AGENT_USER) -> tuple[Path, dict]:
    """A hall.toml with device `serial_id` on `serial_port` (if given) and MQTT devices; returns
    the path and {device_id: key} (raw 32-byte key files under keys/). Devices in
    `waiting_area` stand in the waiting area (no window). `extra` is appended TOML (more
    devices, an [alerts] table). The test intake clients are configured (agent_support).
    `hall` and `agent_user` name the hall code and its agent's broker user."""
    write_client_keys(tmp)
    keys_dir = tmp / "keys"
    keys_dir.mkdir(exist_ok=True)
    keys: dict[int, bytes] = {}
    windows = ["A01", "A02", "A03", "A04"]
    devs = []
    if serial_port is not None:
        devs.append((serial_id, "serial"))
    devs += [(d, "mqtt") for d in mqtt_devices]
    dev_text = ""
    for i, (did, link) in enumerate(devs):
        key = os.urandom(32)
        keys[did] = key
        (keys_dir / f"{did}.key").write_bytes(key)
        place = 'role = "waiting_area"' if did in waiting_area else f'window = "{windows[i]}"'
        dev_text += f"""
[[devices]]
id = {did}
{place}
link = "{link}"
key_file = "keys/{did}.key"
"""
        if link == "serial":
            dev_text += f'port = "{serial_port}"\n'
    broker = ""
    if broker_port is not None:
        broker = f"""
[broker]
host = "127.0.0.1"
port = {broker_port}
username = "{agent_user}"
password = "{agent_password}"
"""
    text = f"""
[hall]
name = "测试大厅（虚构）"
area_code = "{AREA}"
hall_code = "{hall}"

[agent]
storage = "agent.db"
listen = "127.0.0.1:0"

{"".join(f'[[windows]]{chr(10)}id = "{w}"{chr(10)}' for w in windows)}
{dev_text}
{extra}
{broker}
{clients_toml()}

[upstream]
profile = "gbt39046-json"
url = "http://127.0.0.1:9/"
auth = "none"
timeout_s = 2

[privacy]
key = "{PRIVACY_KEY}"
"""
    p = tmp / "hall.toml"
    p.write_text(text, encoding="utf-8")
    return p, keys


def rating_rows(db_path: Path, device_id: int) -> list[int]:
    """rseqs stored for a device, read through a separate connection (what is committed)."""
    import sqlite3
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        return [r[0] for r in conn.execute(
            "SELECT rseq FROM ratings WHERE device_id = ? ORDER BY rseq", (device_id,))]
    finally:
        conn.close()


class AgentProcess:
    """tests/agent_links_testagent.py as a subprocess (killable with SIGKILL)."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.agent_links_testagent", str(cfg)], cwd=str(ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        import threading
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


SEED_CATALOGUE = ROOT / "edge_agent" / "deploy" / "catalogue.seed-0.json"


def use_catalogue(tmp: Path, cfg: Path, version: int | None = None) -> dict:
    """Make the agent of `cfg` push the seed catalogue (as `version` if given); skips the test
    when no CJK font is installed to render it. Returns the catalogue."""
    import json
    from tests.conftest import require
    from tools import bitmaps
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))
    cat = json.loads(SEED_CATALOGUE.read_text(encoding="utf-8"))
    if version is not None:
        cat["version"] = version
    (tmp / "cat.json").write_text(json.dumps(cat, ensure_ascii=False), encoding="utf-8")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\ncatalogue = "cat.json"'),
        encoding="utf-8")
    return cat
