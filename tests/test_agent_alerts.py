"""差评 alerts: webhook (with retry) and MQTT (real Mosquitto), no rater data in them."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest
from aiohttp import web

from tests.agent_support import (RecordingGateway, case_body, rec, running_agent,
                                 synthetic_id, synthetic_phone, wait_for, write_config)
from tests.conftest import require


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Supervisor:
    """The hall supervisor's webhook receiver (the other side of the alert, not our code).
    The first `fail_first` requests get HTTP 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict] = []
        self.fail_first = fail_first
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return web.Response(status=500)
        self.received.append(await request.json())
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/alerts", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/alerts"


def _assert_no_rater_data(payload) -> None:
    text = json.dumps(payload, ensure_ascii=False)
    for n in range(1, 10):
        for secret in (synthetic_id(n), synthetic_phone(n), f"测试{n}号"):
            assert secret not in text


def test_bad_rating_alert_webhook_with_retry(tmp_path):
    gw = RecordingGateway()
    sup = Supervisor(fail_first=1)

    async def scenario():
        url = await sup.start()
        # a hall that opted in to inference: the unsolicited 差评 below binds late
        cfg = write_config(tmp_path, alerts=f'webhook_url = "{url}"', unsolicited="infer")
        try:
            async with running_agent(cfg, gateway=gw) as h:
                status, reply = await h.post_case(case_body("P-BAD", n=3))
                inv = reply["invitations"][0]["inviteId"]
                await h.agent.ingest(1001, [rec(1, level=5, invite_id=inv, reasons=(107, 101))],
                                     time.time())
                # good ratings raise nothing
                status, reply = await h.post_case(case_body("P-GOOD", n=4))
                await h.agent.ingest(1001, [rec(2, level=1,
                                                invite_id=reply["invitations"][0]["inviteId"])],
                                     time.time())
                await wait_for(lambda: sup.received, timeout=10)
                a = sup.received[0]
                assert a["type"] == "bad_rating" and a["level"] == 5
                assert a["levelName"] == "非常不满意"
                assert a["window"] == "A01" and a["windowName"] == "一号窗（测试）"
                assert a["staff"] == {"id": "S001", "name": "测试员甲"}
                assert a["reasons"] == [107, 101] and a["projectNo"] == "P-BAD"
                assert a["ratingId"] == "T01-1001-1"
                _assert_no_rater_data(a)
                assert sup.calls == 2  # the first attempt failed and was retried
                # the agent records the delivery after the webhook answered: poll for it
                await wait_for(lambda: h.q("SELECT state, attempts FROM alerts")
                               == [("done", 2)], timeout=10)
                # an unsolicited 差评 without a case alerts at once; the late case alerts again
                await h.agent.ingest(1001, [rec(3, level=4, reasons=(201,))], time.time())
                await wait_for(lambda: len(sup.received) == 2, timeout=10)
                assert sup.received[1]["projectNo"] is None
                assert sup.received[1]["binding"] == "unbound"
                await h.post_case(case_body("P-LATE", n=5))
                # P-LATE's citizen does not answer its invitation: once it runs out, the press
                # binds to the late case (binding: exact beats inferred)
                now = time.time()
                await h.agent.writer.write(lambda db: db.execute(
                    "UPDATE invitations SET expires_at = ?", (now - 1,)))
                await wait_for(lambda: len(sup.received) == 3, timeout=10)
                assert sup.received[2]["type"] == "bad_rating_case"
                assert sup.received[2]["projectNo"] == "P-LATE"
                for a in sup.received:
                    _assert_no_rater_data(a)
                await asyncio.sleep(0.2)
                assert len(sup.received) == 3
        finally:
            await sup.runner.cleanup()
    asyncio.run(scenario())


@pytest.fixture
def mosquitto(tmp_path):
    require(None if shutil.which("mosquitto") else "mosquitto not installed (apt-get install "
                                                     "mosquitto)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([shutil.which("mosquitto"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)


def test_bad_rating_alert_over_mqtt(tmp_path, mosquitto):
    import paho.mqtt.client as mqtt
    got: list[dict] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-supervisor")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("hcp/v1/T01/alerts", qos=1)
    sub.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    sub.on_message = lambda c, u, msg: got.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    assert subscribed.wait(10)
    cfg = write_config(tmp_path, alerts='mqtt_topic = "hcp/v1/T01/alerts"')
    cfg.write_text(cfg.read_text() + f'\n[broker]\nhost = "127.0.0.1"\nport = {mosquitto}\n')
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(cfg, gateway=gw) as h:
            status, reply = await h.post_case(case_body("P-MQ", n=6))
            inv = reply["invitations"][0]["inviteId"]
            await h.agent.ingest(1001, [rec(1, level=4, invite_id=inv, reasons=(203,))],
                                 time.time())
            await wait_for(lambda: got, timeout=15)
            await wait_for(lambda: h.q("SELECT state FROM alerts") == [("done",)], timeout=5)
    try:
        asyncio.run(scenario())
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert got[0]["projectNo"] == "P-MQ" and got[0]["level"] == 4 and got[0]["reasons"] == [203]
    _assert_no_rater_data(got[0])
