"""The agent's side of a device: its `[[devices]]` entry in hall.toml and its key file.

hall.toml is edited as text (a `[[devices]]` block appended or removed) so the technician's
comments and layout stay; every edit is validated with the agent's own parser
(`edge_agent.config.parse_config`) before it replaces the file atomically. Key files hold the
32-byte key as 64 hex digits and a newline (what `firmware.config.parse_key` and the agent read),
mode 0600. Keys are never printed: only a fingerprint (first 8 hex digits of its SHA-256).
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from pathlib import Path

from edge_agent import device_hellos
from edge_agent.config import Config, ConfigError, load_config
from edge_agent.hall_file import HallFileError, remove_table, replace_checked, toml_str

KEY_LEN = 32


class RegistryError(Exception):
    """Registration refused or impossible; the message says why and what to do."""


def fingerprint(key: bytes) -> str:
    """Safe-to-show identifier of a key."""
    return hashlib.sha256(key).hexdigest()[:8]


def parse_key_text(raw: bytes, where: str) -> bytes:
    """A key from a key file's bytes: 32 raw bytes or 64 hex digits (never echoed)."""
    if len(raw) == KEY_LEN:
        return bytes(raw)
    text = raw.strip()
    if re.fullmatch(rb"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text.decode())
    raise RegistryError(f"密钥文件格式错误 key file {where} must hold 32 bytes or 64 hex digits")


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file; RegistryError naming the file (not its content) when unusable."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RegistryError(f"无法读取密钥文件 cannot read key file {path}: "
                            f"{exc.strerror or exc}") from None
    return parse_key_text(raw, str(path))


def key_file_text(key: bytes) -> bytes:
    """What a key file holds for `key`."""
    if len(key) != KEY_LEN:
        raise ValueError("device key must be 32 bytes")
    return key.hex().encode() + b"\n"


def write_key_file(path: Path, key: bytes) -> None:
    """Create `path` with mode 0600 (from the start: the key is never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key_file_text(key))
        os.fsync(fd)
    finally:
        os.close(fd)


def load(config_path: str | os.PathLike[str]) -> Config:
    """The agent configuration, or RegistryError with the agent's own explanation."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise RegistryError(f"代理配置错误 agent config {config_path}: {exc.key}: {exc.problem}"
                            ) from None


def check_new_device(cfg: Config, dev_id: int, window: str | None, key: bytes | None) -> bool:
    """Refuse an id or key registered to another device. True when `dev_id` is already
    registered with exactly this key (re-provisioning the same device: nothing to register)."""
    if window is not None and cfg.window(window) is None:
        raise RegistryError(f"未知窗口 unknown window {window!r}; configured: "
                            f"{', '.join(w.id for w in cfg.windows)} (add it to "
                            f"{cfg.source_path} first)")
    same = False
    for d in cfg.devices:
        try:
            theirs = read_key_file(d.key_file)
        except RegistryError:
            theirs = None
        if d.id == dev_id:
            if key is not None and theirs == key:
                if d.window != window:
                    raise RegistryError(f"设备 {dev_id} 已登记在窗口 {d.window} device {dev_id} is "
                                        f"registered at window {d.window}, not {window}: edit "
                                        f"{cfg.source_path} or retire it first")
                same = True
                continue
            raise RegistryError(
                f"设备编号 {dev_id} 已登记 device id {dev_id} is already registered (window "
                f"{d.window}, key {fingerprint(theirs) if theirs else 'unreadable'}): retire it "
                f"first (`hcp device retire --dev-id {dev_id}`), choose another --dev-id, or pass "
                f"its --key-file to re-provision the same device")
        if key is not None and theirs == key:
            raise RegistryError(f"密钥已属于设备 {d.id} this key is already registered to device "
                                f"{d.id}: every device needs its own key (omit --key-file to "
                                f"generate one)")
    return same


def hello_floor(cfg: Config, dev_id: int, key: bytes) -> int | None:
    """The highest HELLO counter the agent accepted from `dev_id` under `key` (read-only from its
    database); None when it holds none for this key (a new key: the device starts afresh)."""
    if not Path(cfg.storage).exists():
        return None
    try:
        con = sqlite3.connect(f"file:{cfg.storage}?mode=ro", uri=True, timeout=10)
        try:
            return device_hellos.floor_for_key(con, dev_id, device_hellos.key_fingerprint(key))
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise RegistryError(f"无法读取代理数据库 cannot read the agent database {cfg.storage} "
                            f"({exc}): the device's HELLO counter must be set above what the "
                            f"agent accepted; try again") from None


def devices_block(dev_id: int, window: str | None, link: str, port: str | None,
                  key_file: Path) -> str:
    """The [[devices]] TOML block registering one device (window None: a waiting-area one)."""
    place = f"window = {toml_str(window)}" if window is not None else 'role = "waiting_area"'
    lines = ["", "[[devices]]", f"id = {dev_id}", place, f"link = {toml_str(link)}"]
    if port:
        lines.append(f"port = {toml_str(port)}")
    lines.append(f"key_file = {toml_str(str(key_file))}")
    return "\n".join(lines) + "\n"


def _replace_config(path: Path, text: str) -> Config:
    """Validate `text` with the agent's parser, then atomically replace `path` with it."""
    try:
        return replace_checked(path, text)
    except HallFileError as exc:
        raise RegistryError(str(exc)) from None


def default_keys_dir(cfg: Config) -> Path:
    """Where the other devices' keys are (if they agree), else `keys/` beside hall.toml."""
    dirs = {str(Path(d.key_file).parent) for d in cfg.devices}
    if len(dirs) == 1:
        return Path(dirs.pop())
    return Path(cfg.source_path or ".").parent / "keys"


def register(config_path: str | os.PathLike[str], dev_id: int, window: str | None, link: str,
             port: str | None, key: bytes, keys_dir: Path | None = None) -> Path:
    """Write the key file (0600) and append the device to hall.toml; returns the key file path.
    Checks again under the same rules as check_new_device (the file may have changed)."""
    path = Path(config_path)
    cfg = load(path)
    if check_new_device(cfg, dev_id, window, key):
        return Path(cfg.device(dev_id).key_file)
    key_path = (keys_dir or default_keys_dir(cfg)) / f"{dev_id}.key"
    if key_path.exists():
        if read_key_file(key_path) != key:
            raise RegistryError(f"密钥文件已存在且内容不同 {key_path} exists with another key: "
                                f"move it away (an old device?) and provision again")
    else:
        write_key_file(key_path, key)
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    try:
        _replace_config(path, text + devices_block(dev_id, window, link, port, key_path))
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path


def retire(config_path: str | os.PathLike[str], dev_id: int) -> str:
    """Remove the device's [[devices]] block from hall.toml and delete its key file (the key is
    revoked: once the agent reloads, the device's frames fail). Returns the removed key path.
    The agent's HELLO floor for the device stays with the deleted key's fingerprint, so a device
    registered again under this id with a new key starts from 0 (device_hellos.load_floor)."""
    path = Path(config_path)
    cfg = load(path)
    dev = cfg.device(dev_id)
    if dev is None:
        raise RegistryError(f"设备 {dev_id} 未登记 device {dev_id} is not registered in {path}")
    try:
        remove_table(path, "devices", lambda body: body.get("id") == dev_id)
    except HallFileError:
        raise RegistryError(f"无法在 {path} 中定位设备 {dev_id} 的 [[devices]] 段 cannot find the "
                            f"[[devices]] block of device {dev_id} (inline array?): remove it by "
                            "hand") from None
    Path(dev.key_file).unlink(missing_ok=True)
    return dev.key_file
