"""Device configuration on flash: `config.json` (settings, readable by a technician) and the
32-byte device key in its own file `device.key` (raw 32 bytes, or 64 hex digits). The key is
loaded as bytes and handed to the protocol session; it is never printed, logged or put in an
error message, and `Config` does not hold it. Passwords in the config are masked in repr().

Format (README.md "Config file"): every key except device_id has a default.
"""

import json

from firmware.flow import Tunables

CONFIG_PATH = "config.json"
KEY_PATH = "device.key"
COUNTER_PATH = "hello.ctr"    # firmware/hello_counter.py: belongs to the key, lives beside it

ROLES = ("window", "waiting_area")
# A waiting-area record is 97 bytes on flash (it carries the scanned reference, ratings.py):
# 20,000 of them fit the 2 MB journal partition with littlefs overhead.
WAITING_AREA_CAPACITY = 20000

DEFAULTS = {
    "device_id": 0,
    "hall": "",
    "role": "window",                  # "window", or "waiting_area" (scanner, no invitations)
    "link": "serial",                  # "serial" or "mqtt"
    "serial": {"uart": 1, "baud": 115200},
    "mqtt": {"host": "", "port": 1883, "user": "", "password": "", "keepalive": 30},
    "wifi": {"ssid": "", "password": ""},
    "flow": {"reason_timeout_s": 30, "thanks_s": 3, "too_fast_ms": 300, "unsolicited": True,
             "default_lifetime_s": 120},
    "journal": {"capacity": 50000},   # where it lives is the board's business
    "catalogue_path": "catalogue.bin",
    "session_timeout_s": 60,
    "status_interval_s": 60,
    "pins": {},                        # overrides of the board's default pin map
    "scanner": {"baud": 9600},         # waiting_area: the GM65-class scanner's UART speed
}

_SECRET_KEYS = ("password",)


class ConfigError(ValueError):
    """The configuration is missing or invalid; the message says what to fix."""


def _merge(base, over):
    out = {}
    for k in base:
        out[k] = base[k]
    for k in over:
        if k in base and isinstance(base[k], dict) and isinstance(over[k], dict):
            out[k] = _merge(base[k], over[k])
        else:
            out[k] = over[k]
    return out


def _masked(d):
    out = {}
    for k in d:
        v = d[k]
        if isinstance(v, dict):
            v = _masked(v)
        elif k in _SECRET_KEYS and v:
            v = "***"
        out[k] = v
    return out


class Config:
    """Validated device settings (a dict underneath: `cfg["mqtt"]["host"]`)."""

    def __init__(self, data):
        if not isinstance(data, dict):
            raise ConfigError("配置应为 JSON 对象 config must be a JSON object")
        d = _merge(DEFAULTS, data)
        if d["role"] not in ROLES:
            raise ConfigError("role 只能是 window 或 waiting_area / role must be \"window\" or "
                              "\"waiting_area\"")
        if d["role"] == "waiting_area" and "capacity" not in data.get("journal", {}):
            d["journal"] = _merge(d["journal"], {"capacity": WAITING_AREA_CAPACITY})
        dev = d["device_id"]
        if not isinstance(dev, int) or not 1 <= dev <= 0xFFFFFFFF:
            raise ConfigError("device_id 无效 invalid: need an integer 1..4294967295 "
                              "(set it with the provisioning tool)")
        if d["link"] not in ("serial", "mqtt"):
            raise ConfigError("link 只能是 serial 或 mqtt / link must be \"serial\" or \"mqtt\"")
        if d["link"] == "mqtt":
            if not d["hall"]:
                raise ConfigError("MQTT 需要 hall 编码 / link mqtt needs \"hall\" (topic prefix)")
            if not d["mqtt"]["host"]:
                raise ConfigError("MQTT 需要 mqtt.host / link mqtt needs \"mqtt\": {\"host\": ...}")
        for k in ("reason_timeout_s", "thanks_s", "too_fast_ms", "default_lifetime_s"):
            v = d["flow"][k]
            if not isinstance(v, int) or v < 0:
                raise ConfigError("flow.%s 应为非负整数 must be a non-negative integer" % k)
        baud = d["scanner"]["baud"]
        if not isinstance(baud, int) or baud < 1200:
            raise ConfigError("scanner.baud 应为波特率 must be a baud rate (9600 for a GM65)")
        cap = d["journal"]["capacity"]
        if not isinstance(cap, int) or cap < 1:
            raise ConfigError("journal.capacity 应为正整数 must be a positive integer")
        self.data = d

    def __getitem__(self, k):
        return self.data[k]

    def __repr__(self):
        return "Config(%r)" % (_masked(self.data),)

    @property
    def device_id(self):
        return self.data["device_id"]

    @property
    def waiting_area(self):
        """True for a waiting-area evaluator (scanner, no window, no invitations)."""
        return self.data["role"] == "waiting_area"

    def tunables(self):
        """Flow tunables from the "flow" section. A waiting-area evaluator records a rating only
        after a scan: a press with nothing scanned is evidence of nothing, so it is not kept."""
        f = self.data["flow"]
        scan = self.waiting_area
        return Tunables(reason_timeout_ms=f["reason_timeout_s"] * 1000,
                        thanks_ms=f["thanks_s"] * 1000, too_fast_ms=f["too_fast_ms"],
                        unsolicited=bool(f["unsolicited"]) and not scan,
                        default_lifetime_s=f["default_lifetime_s"], scan=scan)


def load(path=CONFIG_PATH):
    """Read and validate config.json. Raises ConfigError naming the problem."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("找不到配置文件 %s / config file missing: provision the device" % path)
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError("配置文件不是有效 JSON / %s is not valid JSON" % path)
    return Config(data)


def parse_key(raw):
    """The 32-byte key from a key file's content (32 raw bytes or 64 hex digits)."""
    raw = bytes(raw)
    if len(raw) == 32:
        return raw
    text = raw.strip()
    if len(text) == 64:
        try:
            import binascii
            return binascii.unhexlify(text)
        except ValueError:
            pass
    # never echo the content: it is (or is close to) the secret
    raise ConfigError("设备密钥格式错误 / device key must be 32 bytes or 64 hex digits "
                      "(re-provision the device)")


def load_key(path=KEY_PATH):
    """Read the device key file. Raises ConfigError (without the key's content)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise ConfigError("找不到设备密钥 %s / device key file missing: provision the device" % path)
    return parse_key(raw)
