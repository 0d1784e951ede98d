"""The waiting-area flow end to end, on a pty serial line and over MQTT (Mosquitto): the real
firmware on a waiting-area evaluator and on a window evaluator, `hcp agent run`, the province
reference server, the queue system and the business system as signed clients. A citizen's ticket
is called to a window, the case is reported naming it, the citizen walks off and scans the
ticket (another one their receipt) in the waiting area, rates there with a reason — and the
rating reaches the province bound to that case, while the window's unanswered invitation is
withdrawn. Nothing is guessed: an unreadable scan records nothing."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from conftest import require
from edge_agent.intake_client import IntakeClient
from simulator import accounting, rundir, services
from simulator.device import VirtualDevice
from simulator.ptyport import PtyPort
from simulator.synthetic import case_body, china_time

pytestmark = pytest.mark.timeout(120)


async def _until(cond, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.02)


async def _press(dev: VirtualDevice, button: int) -> None:
    up = dev.press(button)
    await asyncio.sleep(max(0.0, up - time.monotonic()) + 0.12)


@pytest.mark.parametrize("link", ["serial", "mqtt"])
def test_waiting_area_flow_end_to_end(tmp_path: Path, link: str) -> None:
    if link == "mqtt":
        require(services.mosquitto_missing())
    started: list[services.Service] = []
    ports: list[PtyPort] = []
    devices: list[VirtualDevice] = []
    broker = None
    try:
        broker_port = services.free_port() if link == "mqtt" else None
        specs = rundir.make_devices(tmp_path, 1, link, broker_port, waiting_area=1,
                                    flow={"thanks_s": 1})
        window_spec, wa_spec = specs
        assert (window_spec.window, wa_spec.window, wa_spec.role) == ("A01", None,
                                                                      "waiting_area")
        keys = rundir.make_clients(tmp_path)
        agent_pw = ""
        if link == "mqtt":
            agent_pw = "agent-pw-synthetic"
            users = {"hcp-agent": agent_pw, **{str(s.device_id): s.mqtt_password for s in specs}}
            broker = services.Broker(tmp_path, users, port=broker_port)
            started.append(broker.service)
            broker.start()
        province = services.province(tmp_path)
        started.append(province)
        province_url = province.start()
        cfg = rundir.write_hall_config(tmp_path, specs, province_url, broker_port=broker_port,
                                       agent_password=agent_pw)
        port_of = {}
        for s in specs:
            if s.port_path is not None:
                p = PtyPort(s.port_path)
                p.plug()
                ports.append(p)
                port_of[s.port_path] = p
        agent = services.agent(cfg, tmp_path)
        started.append(agent)
        agent_url = agent.start()
        for s in specs:
            devices.append(VirtualDevice(s.root, s.window, port_of.get(s.port_path),
                                         rundir.phrases(), seed=s.device_id))
        window_dev, wa = devices
        biz = IntakeClient(agent_url, rundir.BUSINESS_CLIENT, keys[rundir.BUSINESS_CLIENT])
        queue = IntakeClient(agent_url, rundir.QUEUE_CLIENT, keys[rundir.QUEUE_CLIENT])
        asyncio.run(_scenario(devices, window_dev, wa, biz, queue, agent_url, tmp_path,
                              province_url))
    finally:
        for d in devices:
            d.shutdown()
        for p in ports:
            p.close()
        for s in reversed(started):
            s.stop()


async def _scenario(devices, window_dev, wa, biz, queue, agent_url, tmp_path, province_url):
    stop = False

    async def tick():
        while not stop:
            now = time.monotonic()
            for d in devices:
                d.step(now)
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    try:
        for d in devices:
            d.boot()
        await _until(lambda: all(d.link_state == "up" for d in devices), 30, "sessions")
        await _until(lambda: wa.screen == "scan", 10, "the scan prompt")
        assert wa.caption == "请扫描排队小票或回执二维码"
        # the catalogue reaches the waiting-area device too (it asks for 差评 reasons)
        await _until(lambda: wa.app.flow.catalogue is not None, 20, "reason catalogue")

        # the queue system calls ticket T to window A01; the case is reported naming it
        ticket = "T" + time.strftime("%H%M%S") + "A01"
        staff = {"id": "S001", "name": "测试员甲"}
        for etype in ("issued", "called", "started"):
            ev = {"eventId": f"{ticket}-{etype}", "type": etype, "ticket": ticket,
                  "at": china_time(time.time())}
            if etype != "issued":
                ev["window"] = "A01"
            if etype == "called":
                ev["staff"] = staff
            status, reply = await queue.post_event(ev)
            assert status == 201, reply
        project_no = "WA-E2E-" + ticket
        body = case_body(project_no, "A01", "S001", "测试员甲", n=11)
        body["ticket"] = ticket
        status, case = await biz.post_case(body)
        assert status == 201, case
        await _until(lambda: window_dev.state == "invited", 10, "window invitation")
        invite_id = window_dev.invite_id

        # ... but the citizen rates in the waiting area: scans the ticket, 差评 with a reason
        assert wa.scan(ticket)
        await _until(lambda: wa.state == "invited", 5, "rate screen after the scan")
        assert ticket in wa.board.fb.text_lines()
        await asyncio.sleep(0.4)
        await _press(wa, 4)
        await _until(lambda: wa.state == "reason", 5, "reason screen")
        await _press(wa, 2)
        await _until(lambda: wa.state == "thanks", 5, "谢谢")
        gid = f"{rundir.HALL_CODE}-{wa.device_id}-{wa.accepted[-1].rseq}"
        assert wa.accepted[-1].ref == ticket

        # the agent binds it through the ticket to the case and withdraws the window's invite
        await _until(lambda: window_dev.state == "idle", 10, "window invitation withdrawn")
        assert not window_dev.accepted
        # a second citizen scans their case receipt (the projectNo) instead
        project_2 = "WA-E2E-RECEIPT-" + ticket
        status, _ = await biz.post_case(case_body(project_2, "A01", "S001", "测试员甲", n=12))
        assert status == 201
        await _until(lambda: wa.state == "idle", 5, "thanks over")
        # an unreadable scan first (UTF-8 text on the code): nothing recorded
        wa.board.scan("回执".encode("utf-8"))
        await _until(lambda: wa.screen == "scan_bad", 5, "unreadable scan screen")
        n = len(wa.accepted)
        await _until(lambda: wa.screen == "scan", 6, "back to the scan prompt")
        assert len(wa.accepted) == n
        assert wa.scan(project_2)
        await _until(lambda: wa.state == "invited", 5, "rate screen")
        await asyncio.sleep(0.4)
        await _press(wa, 1)
        await _until(lambda: wa.state == "thanks", 5, "谢谢")
        gid2 = f"{rundir.HALL_CODE}-{wa.device_id}-{wa.accepted[-1].rseq}"

        # both reach the province, bound to their cases, exactly once
        def at_province() -> dict:
            return accounting.province_view(province_url)[1]
        await _until(lambda: gid in at_province() and gid2 in at_province(), 30,
                     "uploads at the province")
        view = accounting.agent_view(tmp_path / "agent.db")
        assert view["ratings"][gid]["binding"] == "reference"
        assert view["ratings"][gid2]["binding"] == "reference"
        import sqlite3
        conn = sqlite3.connect(f"file:{tmp_path / 'agent.db'}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute(
                "SELECT r.global_id, c.project_no FROM ratings r JOIN cases c ON"
                " c.id = r.case_id WHERE r.device_id = ?", (wa.device_id,)).fetchall())
            inv_state = conn.execute("SELECT state FROM invitations WHERE invite_id = ?",
                                     (invite_id,)).fetchone()[0]
        finally:
            conn.close()
        assert rows == {gid: project_no, gid2: project_2}
        assert inv_state == "cancelled"
        rec = at_province()[gid]
        assert rec["receivedAt"] > 0
        await _until(lambda: wa.backlog == 0, 10, "device journal drained")
    finally:
        stop = True
        await ticker
