"""Hall configuration: load `hall.toml` (tomllib), validate every key, and name what is wrong.

A bad configuration raises `ConfigError(key, problem)`; `hcp agent check-config` prints it and
exits 2. Secrets (upstream token/secret, privacy key) may be given inline or as a file path; the
file form is what production uses so the TOML can be shown to a technician.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINKS = ("serial", "mqtt")
# 评价渠道 of GB/T 39046 table 9 (the canonical profile's `channel`)
GBT_CHANNELS = ("PC端", "移动服务端", "二维码", "政务大厅平板电脑", "政务大厅其他终端", "电话", "短信")
ROLES = ("window", "waiting_area")
UNSOLICITED = ("keep", "infer")
CLIENT_KINDS = ("business", "queue")


class ConfigError(Exception):
    """A configuration problem: `key` is the dotted TOML path, `problem` says what and what to do."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Hall:
    name: str
    area_code: str
    hall_code: str


@dataclass(frozen=True)
class Window:
    id: str
    name: str
    unsolicited: str = "keep"      # binding of presses with no invitation: "keep" | "infer"


@dataclass(frozen=True)
class Device:
    id: int
    window: str
    link: str
    port: str | None
    baud: int
    key_file: str
    role: str = "window"           # "window", or "waiting_area" (no window; binds by scan)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool


@dataclass(frozen=True)
class Upstream:
    """`[upstream]`: where and how ratings go; which keys a profile needs is in its module
    (edge_agent/upstream/profiles/) and `check-config` lists them."""
    profile: str
    url: str
    auth: str
    token: str | None = field(default=None, repr=False)
    app_id: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    data_source: str = "001"
    area_name: str = ""
    sign_alg: str = "sha256"
    max_in_flight: int = 4
    batch_size: int = 20
    province_prefix: str | None = None
    pf: int | None = None
    # channel of 纸质评价 (paper forms entered in the console): no public interface names one,
    # so it is a setting; by default the hall's "other terminal" channel (see README)
    paper_pf: int = 5
    paper_channel: str = "政务大厅其他终端"
    dept_number: str | None = None
    area_code_length: int | None = None
    service_name: str = "窗口办理"
    paths: dict = field(default_factory=dict)
    catalogue_fetch: bool = True
    catalogue_refresh_s: float = 21600.0
    app_mark: str | None = None
    app_word: str | None = field(default=None, repr=False)
    sm2_private_key: str | None = field(default=None, repr=False)
    sm2_platform_public_key: str | None = None
    sm2_cipher_order: str = "C1C3C2"
    sm2_cipher_encoding: str = "hex"
    sm2_signature_format: str = "der"
    sm2_signer_id: str = "1234567812345678"


@dataclass(frozen=True)
class Alerts:
    webhook_url: str | None
    mqtt_topic: str | None
    wecom_webhook: str | None = None      # 企业微信 group robot (markdown message)
    dingtalk_webhook: str | None = None   # 钉钉 custom robot (markdown message)
    dingtalk_secret: str | None = field(default=None, repr=False)   # its 加签 secret, if set


@dataclass(frozen=True)
class Console:
    """The hall console (web pages for supervisors, staff, technicians): `[console]`."""
    listen_host: str
    listen_port: int
    public_url: str            # how people reach it; links in alerts point here
    followup_workdays: int     # 差评 整改反馈 deadline, in working days after the rating
    session_hours: float
    scans_dir: str             # paper-form photos/scans


@dataclass(frozen=True)
class Client:
    """A business or queue system allowed to report to the agent (edge_agent/intake_auth.py)."""
    id: str
    kind: str                      # "business" (POST /v1/cases) | "queue" (POST /v1/queue/events)
    key_file: str
    windows: tuple[str, ...]       # windows it may report for; ("*",) = every window
    rate_per_min: int
    key: bytes = field(repr=False)

    def may_report(self, window: str) -> bool:
        """True when this client may report for `window`."""
        return "*" in self.windows or window in self.windows


@dataclass(frozen=True)
class Config:
    hall: Hall
    windows: tuple[Window, ...]
    devices: tuple[Device, ...]
    broker: Broker | None
    upstream: Upstream
    storage: str
    listen_host: str
    listen_port: int
    invite_lifetime_s: int
    binding_window_s: int
    alerts: Alerts
    privacy_key: bytes = field(repr=False)
    log_level: str = "info"
    source_path: str | None = None
    catalogue_path: str | None = None
    console: Console | None = None
    clients: tuple[Client, ...] = ()
    reference_max_age_s: int = 86400

    def client(self, client_id: str) -> Client | None:
        """The configured intake client with this id, or None."""
        for c in self.clients:
            if c.id == client_id:
                return c
        return None

    def device(self, device_id: int) -> Device | None:
        """The configured device with this id, or None."""
        for d in self.devices:
            if d.id == device_id:
                return d
        return None

    def window_devices(self, window: str) -> list[Device]:
        """Devices placed at a window (normally one)."""
        return [d for d in self.devices if d.window == window]

    def window(self, window_id: str) -> Window | None:
        for w in self.windows:
            if w.id == window_id:
                return w
        return None


# ---------------------------------------------------------------- small typed getters


def _get(table: dict, key: str, path: str, kind: type | tuple, required: bool = True,
         default: Any = None) -> Any:
    full = f"{path}.{key}" if path else key
    if key not in table:
        if required:
            raise ConfigError(full, "缺少必填项 missing required key")
        return default
    value = table[key]
    # bool is an int in Python; reject it where a number is meant
    if kind in (int, float, (int, float)) and isinstance(value, bool):
        raise ConfigError(full, f"应为数字 must be a number, got {type(value).__name__}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(full, f"类型错误 must be {names}, got {type(value).__name__}")
    return value


def _nonempty(table: dict, key: str, path: str, required: bool = True,
              default: str | None = None) -> str | None:
    value = _get(table, key, path, str, required, default)
    if value is not None and not value.strip():
        raise ConfigError(f"{path}.{key}" if path else key, "不能为空 must not be empty")
    return value


def _table(root: dict, key: str, required: bool = True) -> dict | None:
    if key not in root:
        if required:
            raise ConfigError(key, "缺少配置节 missing section [" + key + "]")
        return None
    if not isinstance(root[key], dict):
        raise ConfigError(key, "应为配置节 must be a table [" + key + "]")
    return root[key]


def _secret(table: dict, key: str, path: str, base: Path) -> str | None:
    """A secret given inline (`key`) or as a file (`key_file`), never both."""
    inline = _get(table, key, path, str, required=False)
    file_key = key + "_file"
    file_name = _get(table, file_key, path, str, required=False)
    if inline is not None and file_name is not None:
        raise ConfigError(f"{path}.{file_key}", f"只能给出 {key} 或 {file_key} 之一 "
                          f"give either {key} or {file_key}, not both")
    if file_name is not None:
        p = _resolve(base, file_name)
        try:
            return p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{path}.{file_key}", f"无法读取文件 cannot read file {str(p)!r}: "
                              f"{exc.strerror or exc}") from None
    return inline


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else (base / p)


def _privacy_key(table: dict, base: Path) -> bytes:
    text = _secret(table, "key", "privacy", base)
    if text is None:
        raise ConfigError("privacy.key", "缺少隐私加密密钥 missing: give key (64 hex digits) "
                          "or key_file")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        # never echo the key material itself
        raise ConfigError("privacy.key", "应为 64 位十六进制（32 字节 AES 密钥） must be 64 hex "
                          "digits (a 32-byte AES key); generate one with `openssl rand -hex 32`")
    return bytes.fromhex(text)


_HALL_CODE = re.compile(r"[A-Za-z0-9_]{1,32}")
_AREA_CODE = re.compile(r"\d{6}|\d{9}")
_WINDOW_ID = re.compile(r"[A-Za-z0-9_\-]{1,32}")


def _upstream(up_t: dict, hall: Hall, base: Path) -> Upstream:
    """`[upstream]` (and `[upstream.sm2]`), checked against what the chosen profile needs."""
    from .upstream.auth import SCHEMES
    from .upstream.registry import PROFILE_NAMES, get_profile
    name = _nonempty(up_t, "profile", "upstream")
    if name not in PROFILE_NAMES:
        raise ConfigError("upstream.profile", f"未知档案 unknown profile {name!r}; one of "
                          f"{', '.join(PROFILE_NAMES)}")
    profile = get_profile(name)
    url = _nonempty(up_t, "url", "upstream")
    if not re.match(r"https?://[^/\s]+", url):
        raise ConfigError("upstream.url", "应为 http(s):// 地址 must be an http(s):// URL")
    auth = _nonempty(up_t, "auth", "upstream", False, profile.auth_schemes[0])
    if auth not in SCHEMES:
        raise ConfigError("upstream.auth", f"应为 {', '.join(SCHEMES)} must be one of "
                          f"{', '.join(SCHEMES)}")
    if auth not in profile.auth_schemes:
        raise ConfigError("upstream.auth", f"档案 {name} 只支持 profile {name} takes auth "
                          f"{' / '.join(profile.auth_schemes)}, not {auth!r}")
    if "service_number" in up_t:
        raise ConfigError("upstream.service_number", "已取消：serviceNumber 现为办件的服务序号 "
                          "(removed: serviceNumber is now the case's service count, an integer "
                          "the agent keeps); delete this key")
    v: dict[str, Any] = {"profile": name, "url": url, "auth": auth}
    v["token"] = _secret(up_t, "token", "upstream", base)
    v["app_id"] = _nonempty(up_t, "app_id", "upstream", False)
    v["app_secret"] = _secret(up_t, "app_secret", "upstream", base)
    if auth == "token" and not v["token"]:
        raise ConfigError("upstream.token", "auth = \"token\" 需要 token 或 token_file "
                          "requires token or token_file")
    if auth == "hmac":
        if not v["app_id"]:
            raise ConfigError("upstream.app_id", "auth = \"hmac\" 需要 app_id requires app_id")
        if not v["app_secret"]:
            raise ConfigError("upstream.app_secret", "auth = \"hmac\" 需要 app_secret 或 "
                              "app_secret_file requires app_secret or app_secret_file")
    v["sign_alg"] = _choice(up_t, "sign_alg", ("sha256", "sm3"), "sha256")
    timeout = _get(up_t, "timeout_s", "upstream", (int, float), False, 10)
    if not 0.1 <= timeout <= 300:
        raise ConfigError("upstream.timeout_s", "应在 0.1–300 秒之间 must be 0.1..300 seconds")
    v["timeout_s"] = float(timeout)
    v["data_source"] = _nonempty(up_t, "data_source", "upstream", False, "001")
    if not re.fullmatch(r"\d{3}", v["data_source"]):
        raise ConfigError("upstream.data_source", "应为三位数字 must be three digits")
    v["area_name"] = _nonempty(up_t, "area_name", "upstream", False, hall.name)
    v["max_in_flight"] = _int_range(up_t, "max_in_flight", 4, 1, 32)
    v["batch_size"] = _int_range(up_t, "batch_size", min(20, profile.max_batch), 1,
                                 profile.max_batch, f"profile {name} takes at most "
                                 f"{profile.max_batch} record(s) per request")
    v["province_prefix"] = _nonempty(up_t, "province_prefix", "upstream", False,
                                     hall.area_code[:2])
    if not re.fullmatch(r"\d{2}", v["province_prefix"]):
        raise ConfigError("upstream.province_prefix", "应为两位省级代码，如山东 37 must be the "
                          "two-digit province code, e.g. 37 for Shandong")
    if "pf" in up_t:
        v["pf"] = _int_range(up_t, "pf", 5, 1, 6, "7 (系统默认评价 system default) is the "
                             "province's, never sent by a hall")
    v["paper_pf"] = _int_range(up_t, "paper_pf", 5, 1, 6, "the channel code paper forms "
                               "(纸质评价) are reported with; 7 is the province's system default")
    v["paper_channel"] = _nonempty(up_t, "paper_channel", "upstream", False, "政务大厅其他终端")
    if v["paper_channel"] not in GBT_CHANNELS:
        raise ConfigError("upstream.paper_channel", "应为 GB/T 39046 评价渠道之一 must be one of "
                          + "、".join(GBT_CHANNELS))
    v["dept_number"] = _nonempty(up_t, "dept_number", "upstream", False)
    if "area_code_length" in up_t:
        v["area_code_length"] = _get(up_t, "area_code_length", "upstream", int)
        if v["area_code_length"] not in (6, 9, 12):
            raise ConfigError("upstream.area_code_length", "应为 6、9 或 12 must be 6, 9 or 12")
    v["service_name"] = _nonempty(up_t, "service_name", "upstream", False, "窗口办理")
    paths = {}
    for kind in ("rating", "service", "catalogue"):
        path = _nonempty(up_t, f"{kind}_path", "upstream", False)
        if path is not None:
            if not path.startswith("/") or any(c.isspace() for c in path):
                raise ConfigError(f"upstream.{kind}_path", "应以 / 开头 must start with / "
                                  "(appended to upstream.url)")
            paths[kind] = path
    v["paths"] = paths
    v["catalogue_fetch"] = _get(up_t, "catalogue_fetch", "upstream", bool, False, True)
    refresh = _get(up_t, "catalogue_refresh_s", "upstream", (int, float), False, 21600)
    if not 60 <= refresh <= 7 * 86400:
        raise ConfigError("upstream.catalogue_refresh_s", "应在 60 秒到 7 天之间 must be "
                          "60 s .. 7 days")
    v["catalogue_refresh_s"] = float(refresh)
    v["app_mark"] = _nonempty(up_t, "app_mark", "upstream", False)
    v["app_word"] = _secret(up_t, "app_word", "upstream", base)
    v.update(_sm2_settings(up_t, base))
    upstream = Upstream(**v)
    missing = profile.missing(upstream)
    if missing:
        raise ConfigError(f"upstream.{missing[0][0]}", f"档案 {name} 缺少必填项 profile {name} "
                          "is missing: " + "; ".join(f"{k} ({why})" for k, why in missing))
    return upstream


def _choice(table: dict, key: str, allowed: tuple[str, ...], default: str,
            path: str = "upstream") -> str:
    value = _nonempty(table, key, path, False, default)
    if value not in allowed:
        raise ConfigError(f"{path}.{key}", f"应为 {' / '.join(allowed)} must be one of "
                          f"{', '.join(allowed)}")
    return value


def _int_range(table: dict, key: str, default: int, low: int, high: int, note: str = "",
               path: str = "upstream") -> int:
    value = _get(table, key, path, int, False, default)
    if not low <= value <= high:
        raise ConfigError(f"{path}.{key}", f"应在 {low}–{high} 之间 must be {low}..{high}"
                          + (f"; {note}" if note else ""))
    return value


def _sm2_settings(up_t: dict, base: Path) -> dict[str, Any]:
    """`[upstream.sm2]`: key files (PEM or hex; never echoed) and the envelope's unknowns."""
    from .upstream import sm2
    t = up_t.get("sm2", {})
    if not isinstance(t, dict):
        raise ConfigError("upstream.sm2", "应为配置节 must be a table [upstream.sm2]")
    path = "upstream.sm2"
    out: dict[str, Any] = {}
    for key, attr, load in (("private_key_file", "sm2_private_key", sm2.load_private_key),
                            ("platform_public_key_file", "sm2_platform_public_key",
                             sm2.load_public_key)):
        name = _nonempty(t, key, path, False)
        if name is None:
            continue
        p = _resolve(base, name)
        try:
            out[attr] = load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}.{key}", f"无法读取文件 cannot read file {str(p)!r}: "
                              f"{exc.strerror or exc}") from None
        except (UnicodeDecodeError, sm2.SM2KeyError) as exc:
            raise ConfigError(f"{path}.{key}", f"{str(p)!r} 不是可用的 SM2 密钥 is not a usable "
                              f"SM2 key: {exc}") from None
    out["sm2_cipher_order"] = _choice(t, "cipher_order", sm2.ORDERS, "C1C3C2", path)
    out["sm2_cipher_encoding"] = _choice(t, "cipher_encoding", sm2.ENCODINGS, "hex", path)
    out["sm2_signature_format"] = _choice(t, "signature_format", sm2.SIGNATURE_FORMATS, "der",
                                          path)
    out["sm2_signer_id"] = _nonempty(t, "signer_id", path, False, sm2.DEFAULT_SIGNER_ID)
    return out


def parse_config(data: dict, base_dir: str | os.PathLike = ".", source: str | None = None
                 ) -> Config:
    """Validate a parsed TOML document; relative paths are resolved against `base_dir`."""
    base = Path(base_dir)
    hall_t = _table(data, "hall")
    hall = Hall(
        name=_nonempty(hall_t, "name", "hall"),
        area_code=_nonempty(hall_t, "area_code", "hall"),
        hall_code=_nonempty(hall_t, "hall_code", "hall"),
    )
    if not _AREA_CODE.fullmatch(hall.area_code):
        raise ConfigError("hall.area_code", "应为 6 位（县级）或 9 位（乡级）行政区划代码 must be "
                          "a 6- or 9-digit GB/T 2260 area code")
    if not _HALL_CODE.fullmatch(hall.hall_code):
        raise ConfigError("hall.hall_code", "只能含字母、数字、下划线，最长 32 must be letters, "
                          "digits or _ (≤ 32); it is part of every rating's global id")

    agent_t = _table(data, "agent", required=False) or {}
    storage = _nonempty(agent_t, "storage", "agent", required=False,
                        default="/var/lib/hcp-agent/agent.db")
    listen = _nonempty(agent_t, "listen", "agent", required=False, default="127.0.0.1:8470")
    m = re.fullmatch(r"(.+):(\d{1,5})", listen)
    if not m or int(m.group(2)) > 65535:
        raise ConfigError("agent.listen", "应为 host:port must be host:port, e.g. 127.0.0.1:8470")
    invite_lifetime = _get(agent_t, "invite_lifetime_s", "agent", int, False, 120)
    if not 5 <= invite_lifetime <= 3600:
        raise ConfigError("agent.invite_lifetime_s", "应在 5–3600 秒之间 must be 5..3600 seconds")
    binding_window = _get(agent_t, "binding_window_s", "agent", int, False, 600)
    if not 0 <= binding_window <= 86400:
        raise ConfigError("agent.binding_window_s", "应在 0–86400 秒之间 must be 0..86400 seconds")
    catalogue = _nonempty(agent_t, "catalogue", "agent", required=False, default=None)
    catalogue_path = None
    if catalogue is not None:
        catalogue_path = str(_resolve(base, catalogue))
        try:
            from .catalogue import load_catalogue, tag_codes
            tag_codes(load_catalogue(Path(catalogue_path)))
        except (OSError, ValueError) as exc:
            raise ConfigError("agent.catalogue", f"评价标签目录无法使用 reason-tag catalogue "
                              f"{catalogue_path} unusable: {exc}") from None
    log_level = _nonempty(agent_t, "log_level", "agent", False, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("agent.log_level", "应为 debug/info/warning/error")

    binding_t = _table(data, "binding", required=False) or {}
    hall_unsolicited = _unsolicited({"binding": binding_t}, "", "keep")
    ref_age = _get(binding_t, "reference_max_age_s", "binding", int, False, 86400)
    if not 60 <= ref_age <= 30 * 86400:
        raise ConfigError("binding.reference_max_age_s", "应在 60 秒到 30 天之间 must be "
                          "60..2592000 seconds")

    windows_raw = _get(data, "windows", "", list)
    if not windows_raw:
        raise ConfigError("windows", "至少配置一个窗口 configure at least one [[windows]]")
    windows: list[Window] = []
    for i, w in enumerate(windows_raw):
        path = f"windows[{i}]"
        if not isinstance(w, dict):
            raise ConfigError(path, "应为表 must be a table")
        wid = _nonempty(w, "id", path)
        if not _WINDOW_ID.fullmatch(wid):
            raise ConfigError(f"{path}.id", "只能含字母、数字、-、_ must be letters, digits, - or _")
        if any(x.id == wid for x in windows):
            raise ConfigError(f"{path}.id", f"窗口编号重复 duplicate window id {wid!r}")
        windows.append(Window(id=wid, name=_nonempty(w, "name", path, False, wid),
                              unsolicited=_unsolicited(w, path, hall_unsolicited)))
    window_ids = [w.id for w in windows]

    devices: list[Device] = []
    for i, d in enumerate(_get(data, "devices", "", list, False, [])):
        path = f"devices[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(path, "应为表 must be a table")
        did = _get(d, "id", path, int)
        if not 0 < did < 2 ** 32:
            raise ConfigError(f"{path}.id", "应为 1..4294967295 的整数 must be a u32 > 0")
        if any(x.id == did for x in devices):
            raise ConfigError(f"{path}.id", f"设备编号重复 duplicate device id {did}")
        role = _nonempty(d, "role", path, False, "window")
        if role not in ROLES:
            raise ConfigError(f"{path}.role", f"应为 {' 或 '.join(ROLES)} must be one of "
                              f"{', '.join(ROLES)}")
        window = _nonempty(d, "window", path, required=(role == "window"))
        if role == "waiting_area" and window is not None:
            raise ConfigError(f"{path}.window", "等候区评价器不属于窗口 a waiting_area device has "
                              "no window: remove `window`")
        if window is not None and window not in window_ids:
            raise ConfigError(f"{path}.window", f"未知窗口 unknown window {window!r}; "
                              f"configured: {', '.join(window_ids)}")
        link = _nonempty(d, "link", path)
        if link not in LINKS:
            raise ConfigError(f"{path}.link", f"应为 {' 或 '.join(LINKS)} must be one of "
                              f"{', '.join(LINKS)}")
        port = _nonempty(d, "port", path, required=(link == "serial"))
        baud = _get(d, "baud", path, int, False, 115200)
        key_file = _nonempty(d, "key_file", path)
        devices.append(Device(id=did, window=window, link=link, port=port, baud=baud,
                              key_file=str(_resolve(base, key_file)), role=role))

    broker_t = _table(data, "broker", required=False)
    broker = None
    if broker_t is not None:
        port = _get(broker_t, "port", "broker", int, False, 1883)
        if not 0 < port < 65536:
            raise ConfigError("broker.port", "应为 1..65535 must be 1..65535")
        broker = Broker(host=_nonempty(broker_t, "host", "broker"), port=port,
                        username=_nonempty(broker_t, "username", "broker", False),
                        password=_secret(broker_t, "password", "broker", base),
                        tls=_get(broker_t, "tls", "broker", bool, False, False))
    if broker is None and any(d.link == "mqtt" for d in devices):
        raise ConfigError("broker", "有 MQTT 设备但缺少 [broker] a device uses link = \"mqtt\" "
                          "but there is no [broker] section")

    upstream = _upstream(_table(data, "upstream"), hall, base)

    alerts_t = _table(data, "alerts", required=False) or {}
    webhook = _nonempty(alerts_t, "webhook_url", "alerts", False)
    if webhook is not None and not re.match(r"https?://[^/\s]+", webhook):
        raise ConfigError("alerts.webhook_url", "应为 http(s):// 地址 must be an http(s):// URL")
    topic = _nonempty(alerts_t, "mqtt_topic", "alerts", False)
    if topic is not None:
        if "#" in topic or "+" in topic:
            raise ConfigError("alerts.mqtt_topic", "发布主题不能含通配符 must not contain + or #")
        if broker is None:
            raise ConfigError("alerts.mqtt_topic", "需要 [broker] 配置节 needs a [broker] section")

    wecom = _nonempty(alerts_t, "wecom_webhook", "alerts", False)
    dingtalk = _nonempty(alerts_t, "dingtalk_webhook", "alerts", False)
    for key_name, url_value in (("wecom_webhook", wecom), ("dingtalk_webhook", dingtalk)):
        if url_value is not None and not re.match(r"https?://[^/\s]+", url_value):
            raise ConfigError(f"alerts.{key_name}", "应为机器人的 http(s):// 地址 must be the "
                              "robot's http(s):// webhook URL")
    dingtalk_secret = _secret(alerts_t, "dingtalk_secret", "alerts", base)

    priv_t = _table(data, "privacy")
    key = _privacy_key(priv_t, base)
    storage_path = str(_resolve(base, storage))
    console = _console(_table(data, "console", required=False), base, storage_path)

    clients = _clients(data, base, window_ids)

    return Config(hall=hall, windows=tuple(windows), devices=tuple(devices), broker=broker,
                  upstream=upstream, storage=storage_path,
                  listen_host=m.group(1), listen_port=int(m.group(2)),
                  invite_lifetime_s=invite_lifetime, binding_window_s=binding_window,
                  alerts=Alerts(webhook_url=webhook, mqtt_topic=topic, wecom_webhook=wecom,
                                dingtalk_webhook=dingtalk, dingtalk_secret=dingtalk_secret),
                  privacy_key=key, log_level=log_level, source_path=source,
                  catalogue_path=catalogue_path, console=console, clients=clients,
                  reference_max_age_s=ref_age)


def _console(table: dict | None, base: Path, storage: str) -> Console | None:
    """`[console]`: absent means no console is served."""
    if table is None:
        return None
    listen = _nonempty(table, "listen", "console")
    m = re.fullmatch(r"(.+):(\d{1,5})", listen)
    if not m or int(m.group(2)) > 65535:
        raise ConfigError("console.listen", "应为 host:port must be host:port, e.g. "
                          "0.0.0.0:8471 (the hall intranet address)")
    host, port = m.group(1), int(m.group(2))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    public = _nonempty(table, "public_url", "console", False, f"http://{shown}:{port}")
    if not re.match(r"https?://[^/\s]+", public):
        raise ConfigError("console.public_url", "应为 http(s):// 地址 must be an http(s):// URL "
                          "people open the console with")
    days = _get(table, "followup_workdays", "console", int, False, 5)
    if not 1 <= days <= 60:
        raise ConfigError("console.followup_workdays", "应在 1–60 个工作日之间 must be 1..60 "
                          "working days (seed 000: 5)")
    hours = _get(table, "session_hours", "console", (int, float), False, 8)
    if not 0.1 <= hours <= 24 * 7:
        raise ConfigError("console.session_hours", "应在 0.1–168 小时之间 must be 0.1..168 hours")
    scans = _nonempty(table, "scans_dir", "console", False, None)
    scans_dir = str(_resolve(base, scans)) if scans else str(Path(storage).parent / "paper-scans")
    return Console(listen_host=host, listen_port=port, public_url=public.rstrip("/"),
                   followup_workdays=days, session_hours=float(hours), scans_dir=scans_dir)


def _unsolicited(table: dict, path: str, default: str) -> str:
    """`binding.unsolicited` of a [[windows]] entry (or of the hall's [binding] section)."""
    b = table.get("binding", {})
    full = f"{path}.binding" if path else "binding"
    if not isinstance(b, dict):
        raise ConfigError(full, "应为表 must be a table")
    value = _get(b, "unsolicited", full, str, False, default)
    if value not in UNSOLICITED:
        raise ConfigError(f"{full}.unsolicited", "应为 keep（保留不绑定）或 infer（推断绑定） "
                          "must be \"keep\" or \"infer\"")
    return value


_CLIENT_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _client_key(path: str, key_path: Path) -> bytes:
    """An intake client's key file: 64 hex digits, readable by its owner only."""
    try:
        st = key_path.stat()
        text = key_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}.key_file", f"无法读取客户端密钥 cannot read client key "
                          f"{str(key_path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{path}.key_file", f"密钥文件权限过宽 key file {str(key_path)!r} is "
                          f"readable by others: chmod 600 it")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise ConfigError(f"{path}.key_file", f"密钥格式错误 {str(key_path)!r} must hold 64 hex "
                          "digits; make one with `hcp agent client add`")
    return bytes.fromhex(text)


def _clients(data: dict, base: Path, window_ids: list[str]) -> tuple[Client, ...]:
    """The [[clients]] allowed to report cases and queue events (edge_agent/intake_auth.py)."""
    out: list[Client] = []
    for i, c in enumerate(_get(data, "clients", "", list, False, [])):
        path = f"clients[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(path, "应为表 must be a table")
        cid = _nonempty(c, "id", path)
        if not _CLIENT_ID.fullmatch(cid):
            raise ConfigError(f"{path}.id", "只能含字母、数字、. _ -，最长 64 must be letters, "
                              "digits, . _ - (≤ 64)")
        if any(x.id == cid for x in out):
            raise ConfigError(f"{path}.id", f"客户端编号重复 duplicate client id {cid!r}")
        kind = _nonempty(c, "kind", path, False, "business")
        if kind not in CLIENT_KINDS:
            raise ConfigError(f"{path}.kind", "应为 business（业务系统）或 queue（排队叫号） "
                              "must be \"business\" or \"queue\"")
        windows = _get(c, "windows", path, list)
        if not windows or not all(isinstance(w, str) for w in windows):
            raise ConfigError(f"{path}.windows", "列出可上报的窗口，或 [\"*\"] 表示全部 list the "
                              "window ids it may report for, or [\"*\"] for every window")
        for w in windows:
            if w != "*" and w not in window_ids:
                raise ConfigError(f"{path}.windows", f"未知窗口 unknown window {w!r}; "
                                  f"configured: {', '.join(window_ids)}")
        rate = _get(c, "rate_per_min", path, int, False, 600)
        if not 1 <= rate <= 100000:
            raise ConfigError(f"{path}.rate_per_min", "应为 1..100000 must be 1..100000")
        key_path = _resolve(base, _nonempty(c, "key_file", path))
        out.append(Client(id=cid, kind=kind, key_file=str(key_path), windows=tuple(windows),
                          rate_per_min=rate, key=_client_key(path, key_path)))
    return tuple(out)


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a hall TOML file; relative paths inside resolve against its folder."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("(file)", f"无法读取配置文件 cannot read {str(p)!r}: "
                          f"{exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("(file)", "不是 UTF-8 编码 file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(syntax)", f"TOML 语法错误 TOML syntax error: {exc}") from None
    return parse_config(data, p.parent, str(p))
