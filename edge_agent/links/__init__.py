"""Device links of the edge agent: RL1 over serial ports and over MQTT.

NOTE for the service (edge_agent/service.py) — how to start the links:

    from edge_agent.links import start_links, stop_links
    links = await start_links(agent, config)      # after `await agent.start()`
    ...
    await stop_links(links)                       # before `await agent.stop()`

or, with the service's factory list: `service.link_factories.append(links.service_factory)`
(`service_factory(agent)` starts the links for `agent.config` and returns the stop coroutine fn).

`start_links` makes one `SerialLink` per serial device (its own port) and one `MqttLink` for all
MQTT devices (if any, via `config.broker`), registers each as the agent's gateway for its devices
(`agent.register_gateway(link, device_ids)`) and starts them. Links connect and reconnect in the
background: a missing port or an unreachable broker is logged and retried, it never stops the
agent. A device whose key file can't be read is logged (path, not content) and left out.

Modules: device_session (the per-device RL1 logic both links share), hello_guard (HELLO rate
limit, burst and replay counts), serial_link, mqtt_link, keys (device key files), name_bitmap
(`render_name`, staff name -> INVITE bitmap).
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from .device_session import DeviceOffline, DeviceSession
from .catalogue_push import build_catalogue_push, load_catalogue_push
from .keys import DeviceKeyError, load_device_key
from .mqtt_link import MqttLink
from .serial_link import SerialLink

log = logging.getLogger("edge_agent.links")

__all__ = ["start_links", "stop_links", "service_factory", "DeviceSession", "DeviceOffline",
           "SerialLink", "MqttLink", "load_device_key"]


def _keys(config: Any, link: str) -> dict[int, bytes]:
    out = {}
    for d in config.devices:
        if d.link != link:
            continue
        try:
            out[d.id] = load_device_key(d.key_file)
        except DeviceKeyError as exc:
            log.error("device left out: key file problem", extra={"deviceId": d.id,
                                                                   "problem": str(exc)})
    return out


async def start_links(agent: Any, config: Any, **options: Any) -> list:
    """Create, register and start the links for `config.devices`. Returns the started links.

    `options` are passed to every link (e.g. `reopen_s`, `silence_s`, `poll_s` for serial ports;
    `receive_maximum` for MQTT; `window`, `catalogue`, `reply_interval_s`, `hello_burst`,
    `hello_rate` for sessions); unknown names raise TypeError. Without a `catalogue` option, the
    catalogue the uploader holds for devices (the platform's, or the file named by
    `agent.catalogue`) is rendered and pushed to devices that hold another version, and a newer
    one fetched from the platform follows.
    """
    follow = "catalogue" not in options
    if follow:
        current = getattr(getattr(agent, "uploader", None), "catalogues", None)
        current = current.current if current is not None else None
        options["catalogue"] = build_catalogue_push(current) if current else \
            load_catalogue_push(getattr(config, "catalogue_path", None))
    serial_opts = {k: v for k, v in options.items() if k in ("reopen_s", "silence_s", "poll_s",
                   "window", "catalogue", "reply_interval_s", "tick_s", "hello_burst",
                   "hello_rate")}
    mqtt_opts = {k: v for k, v in options.items() if k in ("receive_maximum",
                 "keepalive", "client_id", "window", "catalogue",
                 "reply_interval_s", "tick_s", "hello_burst", "hello_rate")}
    unknown = set(options) - set(serial_opts) - set(mqtt_opts)
    if unknown:
        raise TypeError(f"unknown link options: {', '.join(sorted(unknown))}")
    links: list = []
    try:
        serial_keys = _keys(config, "serial")
        for d in config.devices:
            if d.link == "serial" and d.id in serial_keys:
                link = SerialLink(agent, d.id, serial_keys[d.id], d.port, d.baud, **serial_opts)
                agent.register_gateway(link, [d.id])
                await link.start()
                links.append(link)
        mqtt_keys = _keys(config, "mqtt")
        if mqtt_keys:
            b = config.broker
            link = MqttLink(agent, config.hall.hall_code, b.host, b.port, mqtt_keys,
                            username=b.username, password=b.password, tls=b.tls, **mqtt_opts)
            agent.register_gateway(link, list(mqtt_keys))
            await link.start()
            links.append(link)
    except BaseException:
        await stop_links(links)
        raise
    sync = getattr(getattr(agent, "uploader", None), "sync", None)
    if follow and sync is not None:
        sync.listeners.append(lambda cat: _new_catalogue(links, cat))
    return links


def _new_catalogue(links: list, cat: dict) -> None:
    """The platform's catalogue changed: every session pushes it (now if online, else at HELLO)."""
    push = build_catalogue_push(cat)
    if push is None:
        return
    for link in links:
        sessions = getattr(link, "sessions", None)
        for session in (sessions.values() if sessions else [link.session]):
            session.set_catalogue(push)


async def stop_links(links: list) -> None:
    """Stop links in reverse order; frames being processed finish (acked after commit)."""
    for link in reversed(links):
        try:
            await link.stop()
        except Exception as exc:
            log.warning("link stop failed", extra={"link": getattr(link, "kind", "?"),
                                                   "reason": type(exc).__name__})


async def service_factory(agent: Any) -> Callable[[], Awaitable[None]]:
    """For `service.link_factories`: start the links of `agent.config`; returns their stopper."""
    links = await start_links(agent, agent.config)

    async def stop() -> None:
        await stop_links(links)
    return stop
