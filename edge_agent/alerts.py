"""差评 alerts to the hall supervisor: webhook POST (JSON), an MQTT topic (QoS 1), and the
group robots people actually read: 企业微信 (WeCom) and 钉钉 (DingTalk) markdown messages.

Alert rows are written in the same transaction as the rating (see `binding`), so an alert
survives a crash; this dispatcher sends each row until its target confirmed (HTTP 2xx, the
broker's PUBACK, or a robot's `errcode` 0), backing off per row. Payloads carry window, staff,
level, reason codes and names, the case number and a link to the console — never rater data.
The robots get the same payload rendered as markdown (`robot_markdown`).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("edge_agent.alerts")


@dataclass(frozen=True)
class RobotTargets:
    """Group-robot webhooks (`[alerts]` wecom_webhook, dingtalk_webhook, dingtalk_secret)."""
    wecom: str | None = None
    dingtalk: str | None = None
    dingtalk_secret: str | None = None


# WeCom caps markdown content at 4096 bytes; DingTalk's limit is larger, one cap serves both
ROBOT_TEXT_MAX = 4000
_TITLES = {"bad_rating": "差评提醒", "bad_rating_case": "差评已对应办件",
           "hello_burst": "评价器频繁重连"}


def _md(value: Any) -> str:
    """One line of plain text for a markdown message (no line breaks, no link syntax)."""
    text = " ".join(str(value).split())
    return text.replace("[", "［").replace("]", "］")


def robot_markdown(payload: dict, wecom: bool) -> tuple[str, str]:
    """(title, markdown text) of an alert for a group robot; `wecom` adds its font colours."""
    kind = payload.get("type", "")
    title = _TITLES.get(kind, "好差评提醒")
    lines = []
    if "level" in payload:
        level = _md(payload.get("levelName", payload["level"]))
        if wecom:
            level = f'<font color="warning">{level}</font>'
        lines.append(f"### {title}：{level}")
    else:
        lines.append(f"### {title}")
    window = payload.get("windowName") or payload.get("window")
    if window:
        lines.append(f"> 窗口：{_md(window)}（{_md(payload.get('window'))}）")
    staff = payload.get("staff")
    if staff:
        lines.append(f"> 经办人：{_md(staff.get('id'))} {_md(staff.get('name'))}")
    if payload.get("taskName"):
        lines.append(f"> 事项：{_md(payload['taskName'])}")
    if "projectNo" in payload:
        lines.append(f"> 办件编号：{_md(payload['projectNo'])}" if payload["projectNo"]
                     else "> 办件编号：尚未对应办件（评价已保留，待办件报送后对应）")
    names = payload.get("reasonNames")
    if names is not None:
        lines.append(f"> 差评原因：{_md('；'.join(names)) if names else '未选择'}")
    if "deviceId" in payload and "level" not in payload:
        lines.append(f"> 评价器：{_md(payload['deviceId'])}")
    if payload.get("time"):
        lines.append(f"> 时间：{_md(payload['time'].replace('T', ' ')[:19])}")
    if payload.get("link"):
        lines.append(f"\n[在差评工作台处理]({payload['link']})")
    text = "\n".join(lines)
    if len(text.encode("utf-8")) > ROBOT_TEXT_MAX:
        text = text.encode("utf-8")[:ROBOT_TEXT_MAX].decode("utf-8", "ignore")
    return title, text


def robot_request(target: str, targets: RobotTargets, payload: dict,
                  now_ms: int | None = None) -> tuple[str, bytes]:
    """(URL, JSON body) for a robot target; DingTalk's 加签 adds timestamp and sign."""
    if target == "wecom":
        _, text = robot_markdown(payload, wecom=True)
        body = {"msgtype": "markdown", "markdown": {"content": text}}
        return targets.wecom or "", json.dumps(body, ensure_ascii=False).encode("utf-8")
    title, text = robot_markdown(payload, wecom=False)
    body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    url = targets.dingtalk or ""
    if targets.dingtalk_secret:
        ts = str(int(time.time() * 1000) if now_ms is None else now_ms)
        mac = hmac.new(targets.dingtalk_secret.encode("utf-8"),
                       f"{ts}\n{targets.dingtalk_secret}".encode("utf-8"), hashlib.sha256)
        sign = urllib.parse.quote_plus(base64.b64encode(mac.digest()))
        url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={sign}"
    return url, json.dumps(body, ensure_ascii=False).encode("utf-8")


class MqttPublisher:
    """A small paho-mqtt 2.x publisher running its network loop in paho's own thread."""

    def __init__(self, host: str, port: int, username: str | None, password: str | None,
                 tls: bool, client_id: str) -> None:
        import paho.mqtt.client as mqtt
        self._mqtt = mqtt
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=mqtt.MQTTv311)
        if username:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set()
        self._host, self._port = host, port
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._started = False

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def start(self) -> None:
        if not self._started:
            self._client.connect_async(self._host, self._port, keepalive=30)
            self._client.loop_start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        """Blocking: publish QoS 1 and wait for PUBACK; raises on failure (run in a thread)."""
        if not self._connected.wait(timeout):
            raise ConnectionError("MQTT broker not connected")
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError("no PUBACK from the MQTT broker")


class AlertDispatcher:
    """Sends pending alert rows; `wake()` after a commit that created some."""

    def __init__(self, writer: Any, reader_factory: Any, webhook_url: str | None,
                 mqtt_topic: str | None, mqtt: MqttPublisher | None,
                 retry_base_s: float = 2.0, retry_cap_s: float = 300.0,
                 timeout_s: float = 10.0, robots: RobotTargets | None = None) -> None:
        self._writer = writer
        self.robots = robots or RobotTargets()
        self._reader_factory = reader_factory
        self.webhook_url = webhook_url
        self.mqtt_topic = mqtt_topic
        self._mqtt = mqtt
        self._base, self._cap, self._timeout = retry_base_s, retry_cap_s, timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        if self._mqtt is not None:
            self._mqtt.start()
        self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()
        if self._mqtt is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._mqtt.stop)

    async def _run(self) -> None:
        while True:
            try:
                now = time.time()
                self._wake.clear()  # before looking, so a commit during the query is not missed
                row = self._reader_factory().execute(
                    "SELECT id, target, payload, attempts FROM alerts WHERE state = 'pending'"
                    " AND next_at <= ? ORDER BY next_at, id LIMIT 1", (now,)).fetchone()
                if row is None:
                    nxt = self._reader_factory().execute(
                        "SELECT MIN(next_at) FROM alerts WHERE state = 'pending'").fetchone()[0]
                    wait = 5.0 if nxt is None else min(5.0, max(0.0, nxt - now))
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
                    continue
                await self._send(*row)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert loop error")
                await asyncio.sleep(1.0)

    async def _send(self, alert_id: int, target: str, payload: str, attempts: int) -> None:
        error = None
        try:
            if target == "webhook" and self.webhook_url and self._session is not None:
                async with self._session.post(
                        self.webhook_url, data=payload.encode("utf-8"),
                        headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
                    await resp.read()
                    if not 200 <= resp.status < 300:
                        error = f"http_{resp.status}"
            elif target in ("wecom", "dingtalk") and getattr(self.robots, target):
                error = await self._send_robot(target, payload)
            elif target == "mqtt" and self.mqtt_topic and self._mqtt is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._mqtt.publish, self.mqtt_topic, payload.encode("utf-8"),
                    self._timeout)
            else:
                error = f"target {target} not configured"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}"
        await self._record(alert_id, target, attempts, error)

    async def _send_robot(self, target: str, payload: str) -> str | None:
        """POST a robot message; the robots answer HTTP 200 with `errcode` != 0 on refusal."""
        assert self._session is not None
        url, body = robot_request(target, self.robots, json.loads(payload))
        async with self._session.post(url, data=body, headers={
                "Content-Type": "application/json; charset=utf-8"}) as resp:
            raw = await resp.read()
            if not 200 <= resp.status < 300:
                return f"http_{resp.status}"
        try:
            reply = json.loads(raw)
        except ValueError:
            return "unreadable_reply"
        if not isinstance(reply, dict) or reply.get("errcode") != 0:
            code = reply.get("errcode") if isinstance(reply, dict) else None
            return f"errcode_{code}"
        return None

    async def _record(self, alert_id: int, target: str, attempts: int, error: str | None
                      ) -> None:
        now = time.time()
        if error is None:
            self.sent += 1

            def op(db):
                db.execute("UPDATE alerts SET state = 'done', done_at = ?, attempts = attempts + 1,"
                           " last_error = NULL WHERE id = ?", (now, alert_id))
        else:
            self.failed += 1
            ceiling = min(self._cap, self._base * 2 ** min(attempts, 20))
            delay = random.uniform(ceiling / 2, ceiling)

            def op(db):
                db.execute("UPDATE alerts SET attempts = attempts + 1, next_at = ?, last_error = ?"
                           " WHERE id = ?", (now + delay, error, alert_id))
            log.warning("alert not delivered, will retry", extra={
                "alertId": alert_id, "target": target, "reason": error})
        await self._writer.write(op)
