"""`hcp device`: provisioning end to end against the virtual board (real pty, real mpremote, real
MicroPython runtime), a real hall.toml validated by the agent's parser, list/inspect/retire."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from conftest import require
from edge_agent.config import load_config
from tools import agent_registry, bitmaps, device_cli
from tools.firmware_build import build
from tools.provision import ProvisionError, ProvisionOptions, provision

pytestmark = pytest.mark.timeout(90)

HALL = """# 测试配置（虚构）
[hall]
name = "测试大厅"
area_code = "371402"
hall_code = "TEST01"

[agent]
storage = "agent.db"

[[windows]]
id = "A01"

[[windows]]
id = "A02"

[upstream]
profile = "gbt39046-json"
url = "http://127.0.0.1:9"

[privacy]
key = "{privacy}"
"""


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory):
    from simulator.virtual_board import VirtualBoard, unavailable
    require(unavailable())
    with VirtualBoard(tmp_path_factory.mktemp("board-fs")) as b:
        yield b


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))
    out = tmp_path_factory.mktemp("build")
    build(out)
    return out


@pytest.fixture()
def hall(tmp_path: Path) -> Path:
    p = tmp_path / "hall.toml"
    p.write_text(HALL.replace("{privacy}", "ab" * 32), encoding="utf-8")
    return p


def opts(hall: Path, port: str, build_dir: Path, dev_id: int = 1001, **kw) -> ProvisionOptions:
    base = dict(dev_id=dev_id, window="A01", port=port, agent_config=hall, build_dir=build_dir,
                wait=False, wait_timeout_s=1.0, mpremote_timeout_s=30)
    base.update(kw)
    return ProvisionOptions(**base)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_provision_end_to_end(board, build_dir: Path, hall: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code = device_cli.main(["provision", "--dev-id", "1001", "--window", "A01", "--port",
                            board.port, "--agent-config", str(hall), "--build", str(build_dir),
                            "--no-wait"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "[9/9]" in out.out and "校验" in out.out
    manifest = json.loads((build_dir / "manifest.json").read_text())
    for f in manifest["files"]:
        assert sha(board.fs_dir / f["path"]) == f["sha256"], f["path"]
    conf = json.loads((board.fs_dir / "config.json").read_text())
    assert conf["device_id"] == 1001 and conf["hall"] == "TEST01" and conf["link"] == "serial"
    cfg = load_config(hall)
    dev = cfg.device(1001)
    assert dev is not None and dev.window == "A01" and dev.port == board.port
    key_path = Path(dev.key_file)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = agent_registry.read_key_file(key_path)
    assert len(key) == 32
    assert agent_registry.read_key_file(board.fs_dir / "device.key") == key
    assert key.hex() not in out.out + out.err            # the key is never printed
    assert "# 测试配置（虚构）" in hall.read_text(encoding="utf-8")   # comments kept
    # the firmware reads what we wrote
    from firmware import config as fwconfig
    assert fwconfig.parse_key((board.fs_dir / "device.key").read_bytes()) == key
    assert fwconfig.Config(conf).device_id == 1001

    # list / inspect show it, without key material
    assert device_cli.main(["list", "--agent-config", str(hall), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["deviceId"], r["window"], r["registered"]) for r in rows] == [(1001, "A01", True)]
    assert rows[0]["key"].startswith("ok ") and key.hex() not in json.dumps(rows)
    assert device_cli.main(["inspect", "--dev-id", "1001", "--agent-config", str(hall)]) == 0
    assert json.loads(capsys.readouterr().out)["deviceId"] == 1001
    assert device_cli.main(["list", "--agent-config", str(hall)]) == 0
    assert "1001" in capsys.readouterr().out

    # the same id again with a new key is refused (another device), before touching the board
    before = board.stats["raw_paste"]
    assert device_cli.main(["provision", "--dev-id", "1001", "--window", "A01", "--port",
                            board.port, "--agent-config", str(hall), "--build", str(build_dir),
                            "--no-wait"]) == 1
    assert "already registered" in capsys.readouterr().err
    assert board.stats["raw_paste"] == before
    # re-provisioning the same device with its own key is fine and registers nothing new
    assert provision(opts(hall, board.port, build_dir, key_file=key_path), say=lambda s: None) == 0
    assert len(load_config(hall).devices) == 1

    # another id with this device's key is refused
    with pytest.raises(agent_registry.RegistryError, match="already registered to device 1001"):
        provision(opts(hall, board.port, build_dir, dev_id=1002, key_file=key_path),
                  say=lambda s: None)

    # retire: gone from hall.toml, key deleted, config still valid
    assert device_cli.main(["retire", "--dev-id", "1001", "--agent-config", str(hall)]) == 2
    assert device_cli.main(["retire", "--dev-id", "1001", "--agent-config", str(hall),
                            "--yes"]) == 0
    assert load_config(hall).device(1001) is None and not key_path.exists()
    assert device_cli.main(["retire", "--dev-id", "1001", "--agent-config", str(hall),
                            "--yes"]) == 1
    assert "not registered" in capsys.readouterr().err


def test_hash_mismatch_after_copy_is_caught(board, build_dir: Path, hall: Path) -> None:
    manifest = json.loads((build_dir / "manifest.json").read_text())
    victim = next(f["path"] for f in manifest["files"] if f["path"].endswith("flow.mpy"))

    def corrupt() -> None:   # the flash (host folder) is damaged between copy and verify
        p = board.fs_dir / victim
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))

    with pytest.raises(ProvisionError, match="verification failed.*flow.mpy.*NOT registered"):
        provision(opts(hall, board.port, build_dir, dev_id=1003), say=lambda s: None,
                  after_copy=corrupt)
    assert load_config(hall).device(1003) is None      # nothing half-registered
    assert not (hall.parent / "keys" / "1003.key").exists()


def test_no_hello_times_out_with_advice(board, build_dir: Path, hall: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # the virtual board never runs main.py, so the device never says HELLO
    code = device_cli.main(["provision", "--dev-id", "1004", "--window", "A02", "--port",
                            board.port, "--agent-config", str(hall), "--build", str(build_dir),
                            "--wait-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "no HELLO within 1 s" in err and "agent" in err
    assert load_config(hall).device(1004) is not None    # registered; the wait is what failed


def test_wrong_port_says_check_cable(build_dir: Path, hall: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = device_cli.main(["provision", "--dev-id", "1005", "--window", "A01", "--port",
                            str(tmp_path / "ttyUSB9"), "--agent-config", str(hall), "--build",
                            str(build_dir), "--no-wait"])
    err = capsys.readouterr().err
    assert code == 1 and "does not exist" in err and "cable" in err
    assert load_config(hall).device(1005) is None
    # a port that exists but is not a board (a plain file): mpremote cannot use it
    fake = tmp_path / "not-a-tty"
    fake.write_text("")
    assert device_cli.main(["provision", "--dev-id", "1005", "--window", "A01", "--port",
                            str(fake), "--agent-config", str(hall), "--build", str(build_dir),
                            "--no-wait"]) == 1
    assert "connect" in capsys.readouterr().err


def test_dry_run_writes_what_would_be_copied(build_dir: Path, hall: Path, tmp_path: Path) -> None:
    before = hall.read_bytes()
    out = tmp_path / "dry"
    assert device_cli.main(["provision", "--dev-id", "1006", "--window", "A02", "--port",
                            "/dev/ttyUSB0", "--agent-config", str(hall), "--build",
                            str(build_dir), "--dry-run", str(out)]) == 0
    assert hall.read_bytes() == before
    manifest = json.loads((build_dir / "manifest.json").read_text())
    for f in manifest["files"]:
        assert sha(out / "device" / f["path"]) == f["sha256"]
    assert stat.S_IMODE((out / "device" / "device.key").stat().st_mode) == 0o600
    assert json.loads((out / "device" / "config.json").read_text())["device_id"] == 1006
    block = tomllib.loads((out / "agent-devices.toml").read_text(encoding="utf-8"))
    assert block["devices"][0]["id"] == 1006 and block["devices"][0]["window"] == "A02"


def test_unknown_window_and_bad_key_file(build_dir: Path, hall: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert device_cli.main(["provision", "--dev-id", "7", "--window", "Z9", "--port", "/dev/x",
                            "--agent-config", str(hall), "--dry-run", str(tmp_path / "d")]) == 1
    assert "unknown window" in capsys.readouterr().err
    bad = tmp_path / "k"
    bad.write_text("not a key")
    assert device_cli.main(["provision", "--dev-id", "7", "--window", "A01", "--port", "/dev/x",
                            "--agent-config", str(hall), "--key-file", str(bad), "--dry-run",
                            str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "64 hex" in err and "not a key" not in err
    assert os.path.exists(hall)


def test_wait_for_hello_sees_the_real_agent_record_it(hall: Path) -> None:
    """The HELLO wait reads what the real agent writes when a link reports the device online
    (the full device-boots-and-says-HELLO chain needs the firmware app on a board)."""
    import asyncio
    import time

    from edge_agent.agent import Agent
    from tools.provision import wait_for_hello
    cfg = load_config(hall)

    async def go() -> dict:
        agent = Agent(cfg)
        await agent.start()
        try:
            since = time.time()
            waiting = asyncio.get_running_loop().run_in_executor(
                None, wait_for_hello, cfg.storage, 1001, since, 30.0, 0.05)
            await asyncio.sleep(0.2)
            await agent.device_seen(1001, {"online": True, "firmware": "0.1.0"})
            return await waiting
        finally:
            await agent.stop()

    info = asyncio.run(go())
    assert info.get("firmware", "0.1.0") == "0.1.0"


def test_waiting_area_device_is_provisioned_without_a_window(build_dir: Path, hall: Path,
                                                             tmp_path: Path) -> None:
    """`--waiting-area`: the device's config.json says role waiting_area (scanner, no window)
    and hall.toml registers it with that role and no window."""
    out = tmp_path / "dry"
    assert device_cli.main(["provision", "--dev-id", "1009", "--waiting-area", "--port",
                            "/dev/null", "--agent-config", str(hall), "--build", str(build_dir),
                            "--dry-run", str(out), "--no-wait"]) == 0
    conf = json.loads((out / "device" / "config.json").read_text())
    from firmware import config as fwconfig
    assert conf["role"] == "waiting_area" and fwconfig.Config(conf).waiting_area
    assert 'role = "waiting_area"' in (out / "agent-devices.toml").read_text()
    key = os.urandom(32)
    agent_registry.register(hall, 1009, None, "serial", "/dev/ttyX", key,
                            keys_dir=tmp_path / "keys")
    dev = load_config(hall).device(1009)
    assert dev.role == "waiting_area" and dev.window is None
    # a window and --waiting-area together are refused by the command line
    assert device_cli.main(["provision", "--dev-id", "1010", "--window", "A01",
                            "--waiting-area", "--port", "/dev/null", "--agent-config",
                            str(hall)]) == 2
def test_provisioning_sets_the_hello_counter_for_the_key(board, build_dir: Path, hall: Path,
                                                         tmp_path: Path) -> None:
    """SPEC §4.2: the HELLO counter belongs to the key. A new key: the device's counter files
    go (the agent resets its floor for a new key at start). The same key again (e.g. after the
    flash was erased): the device's counter is raised above the floor the agent holds, read
    from its database, or the agent would refuse the device's HELLOs as replays."""
    from edge_agent import device_hellos
    from edge_agent.store import open_database
    from firmware.hello_counter import HelloCounter
    ctr = board.fs_dir / "hello.ctr"
    HelloCounter(str(ctr)).raise_to(700)            # left over from the board's last owner
    assert provision(opts(hall, board.port, build_dir, dev_id=1010), say=lambda s: None) == 0
    assert not ctr.exists() and not (board.fs_dir / "hello.ctr.tmp").exists()
    key = agent_registry.read_key_file(load_config(hall).device(1010).key_file)

    # the agent has run with this key and accepted HELLO counters up to 40
    db = open_database(str(hall.parent / "agent.db"))
    with db.atomic():
        device_hellos.load_floor(db, 1010, device_hellos.key_fingerprint(key))
        device_hellos.record(db, 1010, ctr=40, accepted=40)
    db.close()
    ctr.unlink(missing_ok=True)                      # the flash was erased meanwhile
    notes: list[str] = []
    assert provision(opts(hall, board.port, build_dir, dev_id=1010,
                          key_file=Path(load_config(hall).device(1010).key_file)),
                     say=notes.append) == 0
    assert any("above the agent's 40" in n for n in notes), notes
    assert HelloCounter(str(ctr)).next() == 41      # the device's next HELLO is fresh
    # a dry run shows the same counter file
    out = tmp_path / "dry"
    assert provision(opts(hall, "/dev/ttyUSB0", build_dir, dev_id=1010, dry_run=out,
                          key_file=Path(load_config(hall).device(1010).key_file)),
                     say=lambda s: None) == 0
    assert HelloCounter(str(out / "device" / "hello.ctr")).next() == 41
