"""The real firmware (`firmware.main`) run by MicroPython's unix port as a process
(simulator/mpy_device.py on firmware/board/unix.py: littlefs journal image, pty stdin, control
channel for the buttons), against the REAL agent (Agent + device links, SQLite): over a real pty
and over a real Mosquitto with the shipped ACL and per-device passwords. Presses are injected;
line noise, a dead line, power cuts (SIGKILL), a dropped connection and a broker restart
(SIGKILL) happen on the way. Every press the device showed as accepted is stored exactly once,
and an invitation from a real case binds its rating to that case."""
from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from edge_agent.links import start_links, stop_links
from simulator.device import provision
from simulator.mpy_device import MpyDevice, missing
from simulator.ptyport import PtyPort
from tests.agent_links_support import (AGENT_USER, HALL, Broker, mosquitto_missing,
                                       rating_rows, write_links_config)
from tests.agent_support import case_body, fast_tuning, running_agent, wait_for
from tests.conftest import require

pytestmark = pytest.mark.timeout(180)
PASSWORDS = {AGENT_USER: "agent-test-pw", "1002": "dev-1002-test-pw"}


class Stepper:
    """Steps a device the way the hall simulator does (its process runs on its own)."""

    def __init__(self, dev: MpyDevice) -> None:
        self.dev = dev
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, self.dev.step, loop.time())
            await asyncio.sleep(0.01)

    def __enter__(self) -> "Stepper":
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self.task.cancel()


async def rate(dev: MpyDevice, button: int) -> None:
    """A citizen's press, once the device shows it can take one; waits for 谢谢 or refusal."""
    await wait_for(lambda: dev.on and dev.state in ("idle", "invited", "reason"), 20)
    n = len(dev.accepted)
    dev.press(button)
    await wait_for(lambda: len(dev.accepted) > n or dev.state == "paused", 10)


def exactly_once(db: Path, dev: MpyDevice) -> list[int]:
    rows = rating_rows(db, dev.device_id)
    accepted = sorted(a.rseq for a in dev.accepted)
    assert len(set(accepted)) == len(accepted)
    assert set(accepted) <= set(rows), (accepted, rows)
    assert rows == list(range(1, len(rows) + 1)), rows      # dense, each rseq once
    return rows


def test_firmware_on_micropython_over_pty_with_the_real_agent(tmp_path):
    require(missing())

    async def scenario():
        link_path = tmp_path / "ttyEVAL1001"
        cfg, keys = write_links_config(tmp_path, serial_port=link_path)
        root = tmp_path / "dev1001"
        provision(root, 1001, keys[1001], HALL, "serial")
        port = PtyPort(link_path)
        port.plug()
        dev = MpyDevice(root, "A01", port, seed=3)
        db = tmp_path / "agent.db"
        rng = random.Random(5)
        async with running_agent(cfg, fast_tuning()) as h:
            links = await start_links(h.agent, h.config, reopen_s=0.2)
            try:
                dev.boot()
                with Stepper(dev):
                    await wait_for(lambda: dev.link_state == "up", 20)
                    # a real case: the agent invites, the device shows it, the citizen rates
                    status, _ = await h.post_case(case_body("TEST-MPY-0001", window="A01", n=1))
                    assert status == 201
                    await wait_for(lambda: dev.screen == "invite", 10)
                    assert dev.staff_no == "S001"
                    await asyncio.sleep(0.4)
                    await rate(dev, 2)
                    await wait_for(lambda: rating_rows(db, 1001) == [1], 10)
                    assert h.q("SELECT c.project_no, r.level FROM ratings r "
                               "JOIN cases c ON c.id = r.case_id") == [("TEST-MPY-0001", 2)]
                    # presses with line noise both ways (frames lost and damaged on the wire)
                    for i in range(10):
                        port.noise(bytes(rng.randrange(256) for _ in range(12)),
                                   to_agent=i % 2 == 0)
                        await rate(dev, 1 + i % 3)
                    # the line goes dead for 2 s while presses are journalled
                    dev.link_fault(2.0)
                    for i in range(3):
                        await rate(dev, 3)
                    # power cut (SIGKILL) right after a press, reboot from the littlefs image
                    await rate(dev, 1)
                    dev.power_cut(grace_s=0.2)
                    await wait_for(lambda: not dev.on, 5)
                    await wait_for(lambda: dev.on and dev.link_state == "up", 30)
                    assert dev.boots == 2 and dev.power_cuts == ["SIGKILL"]
                    for i in range(3):
                        await rate(dev, 2)
                    await wait_for(lambda: dev.backlog == 0 and len(rating_rows(db, 1001))
                                   >= max(a.rseq for a in dev.accepted), 40)
                rows = exactly_once(db, dev)
                assert len(dev.accepted) >= 17 and not dev.crashes, (dev.accepted, dev.crashes)
                print(f"\nMicroPython device over pty: {len(rows)} ratings stored once, "
                      f"{len(dev.accepted)} presses accepted, boots {dev.boots}")
            finally:
                dev.shutdown()
                await stop_links(links)
                port.close()
    asyncio.run(scenario())


def test_firmware_on_micropython_over_mosquitto_with_the_real_agent(tmp_path):
    require(missing())
    require(mosquitto_missing())

    async def scenario():
        broker = Broker(tmp_path, PASSWORDS)
        cfg, keys = write_links_config(tmp_path, mqtt_devices=(1002,), broker_port=broker.port,
                                       agent_password=PASSWORDS[AGENT_USER])
        root = tmp_path / "dev1002"
        provision(root, 1002, keys[1002], HALL, "mqtt",
                  mqtt={"host": "127.0.0.1", "port": broker.port,
                        "password": PASSWORDS["1002"], "keepalive": 5})
        dev = MpyDevice(root, "A01", None, seed=4)
        db = tmp_path / "agent.db"
        broker.start()
        async with running_agent(cfg, fast_tuning()) as h:
            links = await start_links(h.agent, h.config)
            try:
                dev.boot()
                with Stepper(dev):
                    await wait_for(lambda: dev.link_state == "up", 20)
                    await wait_for(lambda: h.q("SELECT online FROM devices "
                                               "WHERE device_id = 1002") == [(1,)], 10)
                    status, _ = await h.post_case(case_body("TEST-MPY-0002", window="A01", n=2))
                    assert status == 201
                    await wait_for(lambda: dev.screen == "invite", 10)
                    await asyncio.sleep(0.4)
                    await rate(dev, 1)
                    for i in range(6):
                        await rate(dev, 1 + i % 5)
                    # the broker is killed (in-flight messages and sessions gone) and restarted
                    broker.kill()
                    for i in range(4):
                        await rate(dev, 2)
                    await asyncio.sleep(1.0)
                    broker.start()
                    for i in range(3):
                        await rate(dev, 3)
                    # the connection drops (WiFi blip): the firmware's client reconnects
                    await wait_for(lambda: dev.link_state == "up", 30)
                    dev.link_fault(1.0)
                    for i in range(3):
                        await rate(dev, 1)
                    await wait_for(lambda: dev.link_state == "up" and dev.backlog == 0
                                   and len(rating_rows(db, 1002))
                                   >= max(a.rseq for a in dev.accepted), 45)
                rows = exactly_once(db, dev)
                assert len(rows) >= 17 and not dev.crashes, (rows, dev.crashes)
                assert h.q("SELECT c.project_no FROM ratings r JOIN cases c ON "
                           "c.id = r.case_id") == [("TEST-MPY-0002",)]
                # the ACL let the device use its own topics only: the broker log shows no denial
                assert "denied" not in broker.log().lower()
                print(f"\nMicroPython device over Mosquitto: {len(rows)} ratings stored once")
            finally:
                dev.shutdown()
                await stop_links(links)
                broker.kill()
    asyncio.run(scenario())


def test_damaged_journal_image_is_reported_and_left_alone(tmp_path):
    """The unix board mounts journal.img with the firmware's own rule: a damaged (not blank)
    image is never reformatted; the device shows 存储故障 and takes no rating."""
    require(missing())
    root = tmp_path / "dev1001"
    provision(root, 1001, os.urandom(32), HALL, "serial")
    image = root / "journal.img"
    blob = bytearray(b"\xff" * (512 * 4096))
    blob[:8192] = bytes((i * 7 + 3) & 0xFF for i in range(8192))   # garbage superblocks
    image.write_bytes(bytes(blob))
    link = tmp_path / "tty"
    port = PtyPort(link)
    port.plug()
    dev = MpyDevice(root, "A01", port, seed=1)
    try:
        for _ in range(2):                         # and again at the next boot
            dev.boot()
            assert dev.status["corrupt"] is True and dev.screen == "corrupt"
            dev.press(1)
            t = time.monotonic() + 1.0
            while time.monotonic() < t:
                dev.step(time.monotonic())
                time.sleep(0.02)
            assert dev.accepted == [] and dev.screen == "corrupt"
            dev.shutdown()
        assert image.read_bytes() == bytes(blob)
    finally:
        dev.shutdown()
        port.close()
