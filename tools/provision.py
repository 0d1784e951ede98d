"""`hcp device provision`: give a device its identity, key and firmware over the USB cable, register
it with the agent, and see it say HELLO.

Steps (each printed in Chinese and English; each failure says what to check):
  1 check     build manifest, agent config, window; refuse an id/key registered to another device
  2 key       32 random bytes (secrets.token_bytes), or --key-file
  3 connect   the board answers on its USB serial REPL (MicroPython)
  4 config    config.json + device.key written to the device (the key travels only over this cable),
              and its HELLO counter set for that key (below)
  5 copy      the build (firmware/, protocol/ .mpy, entry points, phrases.bin); the journal is kept
  6 verify    sha256 of every file computed *on the device* and compared with the manifest
  7 register  key file (0600) + [[devices]] entry in hall.toml (validated, atomic)
  8 reboot    hard reset
  9 hello     wait until the agent records the device online (its DB), unless --no-wait
Registration comes after a verified copy so a failed flash leaves nothing half-registered; a
re-run with the same --key-file recognises the registration as its own.

The HELLO counter (protocol/SPEC.md §4.2, firmware/hello_counter.py) belongs to the key. The
agent refuses a HELLO whose counter is not above the last one it accepted under that key (its
"floor", read here from its database, read-only). A key the agent holds no floor for (a new key,
or one it never saw): the device's counter files are removed, both ends start afresh. A key it
holds a floor for (re-provisioning with --key-file, e.g. after the flash was erased): the
device's counter is raised above the floor, or the agent would refuse its HELLOs as replays.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from firmware.hello_counter import HelloCounter
from tools import agent_registry
from tools.agent_registry import RegistryError
from tools.firmware_build import BuildError, build, load_manifest
from tools.mpremote_link import DeviceError, Mpremote

CONFIG_NAME = "config.json"     # firmware.config.CONFIG_PATH
KEY_NAME = "device.key"         # firmware.config.KEY_PATH
COUNTER_NAME = "hello.ctr"      # firmware.config.COUNTER_PATH (and COUNTER_NAME + ".tmp")
SYSTEM_DIRS = ("firmware", "protocol")   # replaced whole; anything else (journal!) is kept
STEPS = 9


class ProvisionError(Exception):
    """Provisioning stopped; the message says what failed and what to check."""


@dataclass
class ProvisionOptions:
    dev_id: int
    window: str | None              # None: a waiting-area evaluator (no window, a scanner)
    port: str
    agent_config: Path
    key_file: Path | None = None
    dry_run: Path | None = None
    build_dir: Path | None = None
    link: str = "serial"
    link_port: str | None = None
    keys_dir: Path | None = None
    device_json: Path | None = None
    wait: bool = True
    wait_timeout_s: float = 60.0
    mpremote_timeout_s: float = 60.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_LOOPBACK = ("127.", "localhost", "::1", "0.0.0.0")


def device_config(opts: ProvisionOptions, hall_code: str, broker: object | None) -> dict:
    """config.json for firmware.config: identity and link; extra settings from --device-json
    (a section such as "mqtt" or "flow" is merged key by key). Checked with the firmware's own
    parser, so a device never boots into a ConfigError."""
    cfg: dict = {"device_id": opts.dev_id, "hall": hall_code, "link": opts.link}
    if opts.window is None:
        cfg["role"] = "waiting_area"
    if opts.link == "mqtt" and broker is None:
        raise ProvisionError(f"代理配置缺少 [broker] {opts.agent_config} has no [broker] section: "
                             f"an MQTT device cannot be registered there (add the hall broker "
                             f"first, see edge_agent/deploy/mosquitto/README.md)")
    if opts.link == "mqtt":
        # the broker ACL (%u) lets a device use only its own topics: username = its device id
        cfg["mqtt"] = {"host": broker.host, "port": broker.port, "user": str(opts.dev_id)}
    if opts.device_json is not None:
        try:
            extra = json.loads(Path(opts.device_json).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"--device-json {opts.device_json}: {exc}") from None
        # identity and link must agree with what is registered at the agent
        if not isinstance(extra, dict) or {"device_id", "hall", "link", "role"} & set(extra):
            raise ProvisionError("--device-json must be a JSON object without device_id, hall, "
                                 "link or role (they come from --dev-id, hall.toml, --link and "
                                 "--window / --waiting-area)")
        for k, v in extra.items():
            # {"mqtt": {"password": ...}} adds the password; it must not drop host/port/user
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    from firmware.config import Config, ConfigError
    try:
        Config(cfg)
    except (ConfigError, TypeError, KeyError) as exc:    # TypeError: a section is not an object
        raise ProvisionError(f"设备配置无效 the device's config.json would be refused by the "
                             f"firmware: {exc} (check --device-json and [broker] in "
                             f"{opts.agent_config})") from None
    if cfg["link"] == "mqtt":
        m = cfg["mqtt"]
        if str(m.get("host", "")).startswith(_LOOPBACK):
            raise ProvisionError(
                f"MQTT 地址 {m['host']} 是代理主机本机地址 the device cannot reach a broker at "
                f"{m['host']} (the agent host's loopback): give the broker's hall-LAN address in "
                f"--device-json, e.g. {{\"mqtt\": {{\"host\": \"192.168.1.10\"}}}}")
        wifi = cfg.get("wifi")
        ssid = wifi.get("ssid") if isinstance(wifi, dict) else None
        missing = [n for n, v in (("mqtt.password", m.get("password")), ("wifi.ssid", ssid))
                   if not v]
        if missing:
            raise ProvisionError(
                f"MQTT 设备缺少 {', '.join(missing)} an MQTT device needs them in --device-json "
                f"(the broker refuses devices without their own password — add it with "
                f"mosquitto_passwd, username {opts.dev_id}; the evaluator joins the hall Wi-Fi)")
    return cfg


# Code run on the device. Kept to what MicroPython has: os, hashlib, binascii.
_RM_TREES = """
import os
def _rm(p):
    try:
        st = os.stat(p)[0]
    except OSError:
        return
    if st & 0x4000:
        for n in os.listdir(p):
            _rm(p + '/' + n)
        os.rmdir(p)
    else:
        os.remove(p)
for _p in %r:
    _rm(_p)
for _d in %r:
    try:
        os.mkdir(_d)
    except OSError:
        pass
"""

_HASHES = """
import hashlib, binascii
for _p in %r:
    try:
        _h = hashlib.sha256()
        with open(_p, 'rb') as _f:
            while True:
                _b = _f.read(1024)
                if not _b:
                    break
                _h.update(_b)
        print('H', _p, binascii.hexlify(_h.digest()).decode())
    except OSError:
        print('M', _p)
"""


_READ_COUNTER = """
import binascii
for _p in %r:
    try:
        with open(_p, 'rb') as _f:
            print('C', _p, binascii.hexlify(_f.read()).decode() or '-')
    except OSError:
        print('M', _p)
"""

_SET_COUNTER = """
import os
for _p in %r:
    try:
        os.remove(_p)
    except OSError:
        pass
if %r:
    os.rename(%r, %r)
"""


def counter_file(device_files: dict[str, bytes], floor: int) -> bytes:
    """The device's counter file raised above the agent's `floor`, computed by the firmware's own
    code on a scratch copy of the device's counter files (name -> content)."""
    with tempfile.TemporaryDirectory(prefix="hcp-ctr-") as td:
        for name, data in device_files.items():
            (Path(td) / name).write_bytes(data)
        HelloCounter(str(Path(td) / COUNTER_NAME)).raise_to(floor)
        return (Path(td) / COUNTER_NAME).read_bytes()


def _dirs(paths: list[str]) -> list[str]:
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return sorted(out, key=lambda d: (d.count("/"), d))


class Provisioner:
    """One provisioning run. `say` prints progress; `after_copy` is a test hook run between the
    copy and the verification (e.g. to damage a file and see the verification catch it)."""

    def __init__(self, opts: ProvisionOptions, say: Callable[[str], None] = print,
                 after_copy: Callable[[], None] | None = None) -> None:
        self.o = opts
        self.say = say
        self.after_copy = after_copy
        self.n = 0

    def step(self, zh: str, en: str) -> None:
        self.n += 1
        self.say(f"[{self.n}/{STEPS}] {zh} {en} …")

    def ok(self, text: str = "") -> None:
        self.say("      ✓ 完成 done" + (f": {text}" if text else ""))

    def run(self) -> int:
        o = self.o
        self.step("检查", "check build and agent configuration")
        cfg = agent_registry.load(o.agent_config)
        key = agent_registry.read_key_file(o.key_file) if o.key_file else None
        already = agent_registry.check_new_device(cfg, o.dev_id, o.window, key)
        if o.link == "serial" and not o.link_port:
            o.link_port = o.port
            self.say(f"      注意 note: the agent will read device {o.dev_id} on {o.port} "
                     f"(pass --link-port if its data link is another port than this USB port)")
        tmp_build = None
        if o.build_dir is None:
            tmp_build = Path(tempfile.mkdtemp(prefix="hcp-build-"))
            manifest = build(tmp_build)
            build_dir = tmp_build
        else:
            build_dir = o.build_dir
            manifest = load_manifest(build_dir)
        conf = device_config(o, cfg.hall.hall_code, cfg.broker)
        self.ok(f"firmware {manifest['version']}, {len(manifest['files'])} files, "
                + (f"window {o.window}" if o.window else "waiting area")
                + (", re-provisioning a registered device" if already else ""))
        try:
            self.step("密钥", "device key")
            if key is None:
                key = secrets.token_bytes(agent_registry.KEY_LEN)
                self.ok(f"new key, fingerprint {agent_registry.fingerprint(key)}")
            else:
                self.ok(f"from {o.key_file}, fingerprint {agent_registry.fingerprint(key)}")
            if o.dry_run is not None:
                return self._dry_run(build_dir, manifest, conf, key, cfg)
            # a key made just now cannot have a floor at the agent: its database is only read
            # for a key the technician brought (--key-file)
            floor = agent_registry.hello_floor(cfg, o.dev_id, key) if o.key_file else None
            return self._device(build_dir, manifest, conf, key, already, floor)
        finally:
            if tmp_build is not None:
                shutil.rmtree(tmp_build, ignore_errors=True)

    # ------------------------------------------------------------------ dry run
    def _dry_run(self, build_dir: Path, manifest: dict, conf: dict, key: bytes, cfg) -> int:
        out = Path(self.o.dry_run)
        dev = out / "device"
        if dev.exists():
            shutil.rmtree(dev)
        dev.mkdir(parents=True)
        for f in manifest["files"]:
            (dev / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(build_dir / f["path"], dev / f["path"])
        (dev / CONFIG_NAME).write_text(json.dumps(conf, ensure_ascii=False, indent=1) + "\n",
                                       encoding="utf-8")
        (dev / KEY_NAME).unlink(missing_ok=True)
        agent_registry.write_key_file(dev / KEY_NAME, key)
        floor = agent_registry.hello_floor(cfg, self.o.dev_id, key) if self.o.key_file else None
        if floor is not None:
            (dev / COUNTER_NAME).write_bytes(counter_file({}, floor))
        keys_dir = self.o.keys_dir or agent_registry.default_keys_dir(cfg)
        block = agent_registry.devices_block(self.o.dev_id, self.o.window, self.o.link,
                                              self.o.link_port, keys_dir / f"{self.o.dev_id}.key")
        (out / "agent-devices.toml").write_text(
            f"# would be appended to {cfg.source_path}; key file written with mode 0600\n" + block,
            encoding="utf-8")
        shutil.copyfile(build_dir / "manifest.json", out / "manifest.json")
        self.say(f"演练完成，未连接设备、未修改代理配置 dry run: nothing sent to {self.o.port}, "
                 f"{cfg.source_path} unchanged; what would be copied is in {dev}")
        return 0

    # ------------------------------------------------------------------ the real thing
    def _device(self, build_dir: Path, manifest: dict, conf: dict, key: bytes,
                already: bool, floor: int | None) -> int:
        o = self.o
        mp = Mpremote(o.port, o.mpremote_timeout_s)
        self.step("连接设备", f"connect to the board on {o.port}")
        out = mp.exec("import sys\nprint(sys.implementation.name, sys.platform, "
                      "'.'.join(str(v) for v in sys.implementation.version[:3]))",
                      what="connect 连接").strip()
        if not out.startswith("micropython"):
            raise ProvisionError(f"不是 MicroPython 设备 the board on {o.port} does not run "
                                 f"MicroPython ({out[:60]!r}): flash MicroPython first (wrong "
                                 f"firmware?)")
        self.ok(out)

        self.step("写入配置与密钥", "write config.json and device.key over USB")
        with tempfile.TemporaryDirectory(prefix="hcp-dev-") as td:
            conf_path, key_path = Path(td) / CONFIG_NAME, Path(td) / KEY_NAME
            conf_bytes = (json.dumps(conf, ensure_ascii=False, indent=1) + "\n").encode()
            conf_path.write_bytes(conf_bytes)
            agent_registry.write_key_file(key_path, key)
            mp.run("fs", "cp", str(conf_path), ":" + CONFIG_NAME, "+",
                   "fs", "cp", str(key_path), ":" + KEY_NAME, what="config 写配置")
            counter, counter_note = self._hello_counter(mp, floor, Path(td))
        self.ok(f"device_id {o.dev_id}, link {o.link}; {counter_note}")

        self.step("复制固件", f"copy firmware {manifest['version']} ({manifest['total_size']} bytes)")
        paths = [f["path"] for f in manifest["files"]]
        mp.exec(_RM_TREES % (list(SYSTEM_DIRS), _dirs(paths)), what="prepare 准备目录")
        args: list[str] = []
        for p in paths:
            args += ["fs", "cp", str(build_dir / p), ":" + p, "+"]
        mp.run(*args[:-1], what="copy 复制")
        self.ok(f"{len(paths)} files")
        if self.after_copy is not None:
            self.after_copy()

        self.step("校验", "verify sha256 of every file on the device")
        expected = {f["path"]: f["sha256"] for f in manifest["files"]}
        expected[CONFIG_NAME] = _sha(conf_bytes)
        expected[KEY_NAME] = _sha(agent_registry.key_file_text(key))
        if counter is not None:
            expected[COUNTER_NAME] = _sha(counter)
        out = mp.exec(_HASHES % (sorted(expected),), what="verify 校验")
        got = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "H":
                got[parts[1]] = parts[2]
        bad = [p for p in sorted(expected) if got.get(p) != expected[p]]
        if bad:
            missing = [p for p in bad if p not in got]
            raise ProvisionError(
                f"校验失败 verification failed for {len(bad)} file(s): {', '.join(bad[:5])}"
                + (f" (missing: {', '.join(missing[:5])})" if missing else " (content differs)")
                + ": the copy was damaged or the flash is failing — run provision again; if it "
                  "repeats, erase the flash (esptool erase_flash), reflash MicroPython, or replace "
                  "the board. The device was NOT registered.")
        self.ok(f"{len(expected)} files match")

        self.step("登记到代理", f"register device {o.dev_id} in {o.agent_config}")
        if already:
            self.ok("already registered with this key 已登记（同一密钥）")
        else:
            kp = agent_registry.register(o.agent_config, o.dev_id, o.window, o.link, o.link_port,
                                         key, o.keys_dir)
            self.ok(f"key file {kp} (0600); restart the agent so it loads the device "
                    f"(systemctl restart hcp-agent)")

        self.step("重启设备", "reboot the device")
        mp.run("reset", what="reboot 重启")
        t0 = time.time()
        self.ok()

        self.step("等待上线", "wait for the device's HELLO at the agent")
        if not o.wait:
            self.ok("skipped (--no-wait); check later with `hcp device inspect --dev-id "
                    f"{o.dev_id}`")
            return 0
        info = wait_for_hello(agent_registry.load(o.agent_config).storage, o.dev_id, t0,
                              o.wait_timeout_s)
        self.ok(f"online, firmware {info.get('firmware', '?')}")
        self.say(f"开通完成 device {o.dev_id} provisioned "
                 + (f"at window {o.window}" if o.window else "in the waiting area"))
        return 0


    def _hello_counter(self, mp: Mpremote, floor: int | None, td: Path
                       ) -> tuple[bytes | None, str]:
        """Set the device's HELLO counter for its key (module docstring). Returns the counter
        file written (None when removed) and a note for the technician."""
        tmp_name = COUNTER_NAME + ".tmp"
        if floor is None:
            mp.exec(_SET_COUNTER % ([COUNTER_NAME, tmp_name], False, "", ""),
                    what="counter 握手计数器")
            return None, "HELLO counter reset (新密钥 new key)"
        files: dict[str, bytes] = {}
        out = mp.exec(_READ_COUNTER % ([COUNTER_NAME, tmp_name],), what="counter 握手计数器")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "C":
                files[parts[1]] = b"" if parts[2] == "-" else bytes.fromhex(parts[2])
        data = counter_file(files, floor)
        local = td / tmp_name
        local.write_bytes(data)
        # written beside, then renamed: a pulled cable never leaves a torn counter file
        mp.run("fs", "cp", str(local), ":" + tmp_name, what="counter 握手计数器")
        mp.exec(_SET_COUNTER % ([], True, tmp_name, COUNTER_NAME), what="counter 握手计数器")
        return data, f"HELLO counter above the agent's {floor} (同一密钥 same key)"


def wait_for_hello(db_path: str, dev_id: int, since: float, timeout_s: float,
                   poll_s: float = 0.5) -> dict:
    """Poll the agent's database until the device is online with last_seen ≥ since."""
    deadline = time.monotonic() + timeout_s
    seen_db = False
    while True:
        row = None
        if Path(db_path).exists():
            seen_db = True
            try:
                con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
                try:
                    row = con.execute("SELECT online, last_seen, info FROM devices WHERE "
                                      "device_id = ?", (dev_id,)).fetchone()
                finally:
                    con.close()
            except sqlite3.Error:
                row = None   # agent migrating or busy: ask again
        if row and row[0] and row[1] is not None and row[1] >= since:
            try:
                return json.loads(row[2] or "{}")
            except ValueError:
                return {}
        if time.monotonic() >= deadline:
            why = ("the agent database does not exist: is the agent running?" if not seen_db else
                   "the agent has not seen it since the reboot")
            raise ProvisionError(
                f"设备未上线 device {dev_id} sent no HELLO within {timeout_s:.0f} s ({why}). "
                f"Check: the agent was restarted after registration (it reads hall.toml at start); "
                f"the data-link cable/port (UART1, not the USB REPL port); `hcp agent devices`; "
                f"an ERROR bad_mac in the agent log means a key mismatch (provision again). "
                f"The device stays registered.")
        time.sleep(poll_s)


def provision(opts: ProvisionOptions, say: Callable[[str], None] = print,
              after_copy: Callable[[], None] | None = None) -> int:
    """Run provisioning; raises ProvisionError / DeviceError / RegistryError / BuildError."""
    return Provisioner(opts, say, after_copy).run()


ERRORS = (ProvisionError, DeviceError, RegistryError, BuildError)
