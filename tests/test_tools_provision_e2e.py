"""Issue 6: one device end to end, from a blank board to HELLO at a running agent.

`hcp device provision` (a subprocess, as a technician runs it) flashes the virtual board
(simulator/virtual_board: a pty REPL in the real MicroPython runtime, driven by real mpremote) and
registers the device in hall.toml with `--link-port` = a pty symlink this test made (the data
link, not the REPL port). While provisioning waits for the first HELLO (its step 9), the board's
flash folder — config.json and device.key exactly as provisioning wrote them — boots as a
VirtualDevice (the repository's firmware app under CPython on firmware/board/sim.py) on that pty,
and `hcp agent run` is started on that hall.toml (the "restart the agent" a technician does after
registration). Provisioning's own wait must then succeed, and `hcp agent devices` /
`hcp device inspect` must show the device online with the firmware version that was built.
"""
from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import require
from edge_agent.config import load_config
from simulator import services
from simulator.device import VirtualDevice
from simulator.ptyport import PtyPort
from tools import agent_registry, bitmaps
from tools.firmware_build import build

pytestmark = pytest.mark.timeout(120)

DEV_ID = 2001
CATALOGUE = (Path(__file__).resolve().parent.parent / "edge_agent" / "deploy"
             / "catalogue.seed-0.json")

HALL = f"""# 端到端开通测试（虚构数据）synthetic
[hall]
name = "测试大厅（虚构）"
area_code = "371402"
hall_code = "TEST06"

[agent]
storage = "agent.db"
listen = "127.0.0.1:0"
log_level = "warning"
catalogue = "{CATALOGUE}"

[[windows]]
id = "A01"
name = "综合受理一号窗（虚构）"

[upstream]
profile = "gbt39046-json"
url = "http://127.0.0.1:9"

[privacy]
key = "{'cd' * 32}"
"""


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))
    out = tmp_path_factory.mktemp("build")
    build(out)
    return out


class Lines:
    """A child's stdout, line by line, read on a thread (never blocks the test forever)."""

    def __init__(self, stream) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def until(self, marker: str, timeout: float) -> bool:
        """Read until a line containing `marker` (True) or EOF/timeout (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.q.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
            if marker in line:
                return True
        return False

    def rest(self, timeout: float) -> str:
        """Everything until EOF."""
        self.until("\x00never\x00", timeout)
        return "".join(self.seen)


class Stepper:
    """Steps a VirtualDevice on a thread the way its asyncio tasks would run on the board."""

    def __init__(self, dev: VirtualDevice) -> None:
        self.dev = dev
        self.stop_ev = threading.Event()
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop_ev.is_set():
                self.dev.step(time.monotonic())
                time.sleep(0.004)
        except BaseException as exc:       # surfaced by the test, not lost in a thread
            self.error = exc

    def start(self) -> None:
        self.t.start()

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join(5)


def test_provisioned_device_boots_in_the_simulator_and_says_hello(
        tmp_path: Path, build_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulator.virtual_board import VirtualBoard, unavailable
    require(unavailable())
    monkeypatch.chdir(tmp_path)            # anything written to a relative path lands here
    hall = tmp_path / "hall.toml"
    hall.write_text(HALL, encoding="utf-8")
    manifest = json.loads((build_dir / "manifest.json").read_text())
    flash = tmp_path / "flash"
    link = PtyPort(tmp_path / "dev" / f"ttyHCP{DEV_ID}")
    (tmp_path / "dev").mkdir()
    link.plug()                            # the data-link adapter is plugged in from the start

    board = VirtualBoard(flash)
    repl_port = board.start()
    prov = agent = stepper = dev = None
    try:
        prov = subprocess.Popen(
            services.hcp_argv("device", "provision", "--dev-id", str(DEV_ID), "--window", "A01",
                              "--port", repl_port, "--link-port", str(link.link_path),
                              "--agent-config", str(hall), "--build", str(build_dir),
                              "--wait-timeout", "40"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=services.ROOT)
        out = Lines(prov.stdout)
        # step 9 is printed after the reboot: the board is done with the REPL and waits
        assert out.until("[9/9]", 60), ("provisioning did not reach the HELLO wait:\n"
                                        + out.rest(5) + prov.stderr.read())
        board.stop()                       # the USB cable comes off; the flash stays as written

        # what provisioning registered: the pty symlink as the data link, not the REPL port
        cfg = load_config(hall)
        reg = cfg.device(DEV_ID)
        assert reg is not None and reg.window == "A01" and reg.link == "serial"
        assert reg.port == str(link.link_path) != repl_port
        conf = json.loads((flash / "config.json").read_text(encoding="utf-8"))
        assert conf == {"device_id": DEV_ID, "hall": "TEST06", "link": "serial"}

        # the technician restarts the agent so it loads the new [[devices]] entry
        agent = services.agent(hall, tmp_path)
        agent.start()
        # the same device (its flash folder, unchanged) powers up running the firmware app
        dev = VirtualDevice(flash, "A01", link)
        assert dev.device_id == DEV_ID
        assert dev.key == agent_registry.read_key_file(reg.key_file)
        dev.boot()
        stepper = Stepper(dev)
        stepper.start()

        # provisioning's own step 9 sees the HELLO in the agent's database
        text = out.rest(50)
        assert prov.wait(10) == 0, text + prov.stderr.read()
        assert f"online, firmware {manifest['version']}" in text, text
        assert f"device {DEV_ID} provisioned at window A01" in text
        assert stepper.error is None, stepper.error
        assert dev.link_state == "up"

        # the agent's view (`hcp agent devices`) and the technician's (`hcp device inspect`)
        rows = json.loads(subprocess.run(
            services.hcp_argv("agent", "devices", "--config", str(hall), "--json"),
            capture_output=True, text=True, check=True, cwd=services.ROOT).stdout)
        row = next(r for r in rows if r["deviceId"] == DEV_ID)
        assert row["online"] is True and row["window"] == "A01"
        assert row["info"]["firmware"] == manifest["version"]
        ins = json.loads(subprocess.run(
            services.hcp_argv("device", "inspect", "--dev-id", str(DEV_ID), "--agent-config",
                              str(hall)),
            capture_output=True, text=True, check=True, cwd=services.ROOT).stdout)
        assert ins["registered"] is True and ins["online"] is True
        assert ins["firmware"] == manifest["version"] and ins["key"].startswith("ok ")

        # the agent pushes its reason-tag catalogue; the device stores it on its own flash
        end = time.monotonic() + 20
        while time.monotonic() < end and not (flash / "catalogue.bin").exists():
            time.sleep(0.05)
        assert (flash / "catalogue.bin").exists()
        assert not (tmp_path / "catalogue.bin").exists()
        assert stepper.error is None, stepper.error
    finally:
        if stepper is not None:
            stepper.stop()
        if dev is not None:
            dev.shutdown()
        if agent is not None:
            agent.stop()
        if prov is not None and prov.poll() is None:
            prov.kill()
            prov.wait(5)
        board.stop()
        link.close()


BROKER = """
[broker]
host = "127.0.0.1"
port = 1883
username = "hcp-agent"
password = "synthetic-agent-pw"
"""


def _provision_dry(hall: Path, build_dir: Path, out: Path, link: str, extra: dict | None,
                   capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from tools import device_cli
    argv = ["provision", "--dev-id", "2002", "--window", "A01", "--port", "/dev/ttyUSB0",
            "--agent-config", str(hall), "--build", str(build_dir), "--link", link,
            "--dry-run", str(out)]
    if extra is not None:
        (out.parent / "device.json").write_text(json.dumps(extra), encoding="utf-8")
        argv += ["--device-json", str(out.parent / "device.json")]
    code = device_cli.main(argv)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_device_json_is_merged_and_checked_with_the_firmware_parser(
        tmp_path: Path, build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """config.json is what firmware/config.py accepts: --device-json adds to a section instead of
    replacing it, and settings the firmware (or the broker) would refuse stop provisioning at
    step 1, before the board or hall.toml is touched."""
    from firmware import config as fwconfig
    hall = tmp_path / "hall.toml"
    hall.write_text(HALL, encoding="utf-8")
    out = tmp_path / "dry"
    # serial: a flow tweak keeps the other flow defaults; a bad value is the firmware's refusal
    code, text = _provision_dry(hall, build_dir, out, "serial", {"flow": {"thanks_s": 2}}, capsys)
    assert code == 0, text
    conf = json.loads((out / "device" / "config.json").read_text(encoding="utf-8"))
    assert conf["flow"] == {"thanks_s": 2}
    assert fwconfig.Config(conf).tunables().thanks_ms == 2000
    code, text = _provision_dry(hall, build_dir, out, "serial", {"flow": {"thanks_s": -1}}, capsys)
    assert code == 1 and "flow.thanks_s" in text and "firmware" in text
    code, text = _provision_dry(hall, build_dir, out, "serial", {"link": "mqtt"}, capsys)
    assert code == 1 and "--link" in text
    # mqtt without a [broker] in hall.toml
    code, text = _provision_dry(hall, build_dir, out, "mqtt", None, capsys)
    assert code == 1 and "[broker]" in text

    hall.write_text(HALL + BROKER, encoding="utf-8")
    before = hall.read_bytes()
    # the agent's broker address is loopback: a device cannot use it
    code, text = _provision_dry(hall, build_dir, out, "mqtt", None, capsys)
    assert code == 1 and "loopback" in text
    # the device's own broker password and the hall Wi-Fi are required
    code, text = _provision_dry(hall, build_dir, out, "mqtt",
                                {"mqtt": {"host": "192.168.1.10"}}, capsys)
    assert code == 1 and "mqtt.password" in text and "wifi.ssid" in text
    extra = {"mqtt": {"host": "192.168.1.10", "password": "synthetic-dev-pw"},
             "wifi": {"ssid": "HALL-TEST", "password": "synthetic-wifi-pw"}}
    code, text = _provision_dry(hall, build_dir, out, "mqtt", extra, capsys)
    assert code == 0, text
    assert "synthetic-dev-pw" not in text and "synthetic-wifi-pw" not in text
    conf = json.loads((out / "device" / "config.json").read_text(encoding="utf-8"))
    # port from [broker], username = device id (the ACL's %u), password/host from --device-json
    assert conf["mqtt"] == {"host": "192.168.1.10", "port": 1883, "user": "2002",
                            "password": "synthetic-dev-pw"}
    assert fwconfig.Config(conf)["mqtt"]["keepalive"] == 30
    block = (out / "agent-devices.toml").read_text(encoding="utf-8")
    assert 'link = "mqtt"' in block and "port =" not in block
    assert hall.read_bytes() == before
