"""`hcp agent run`: the long-running service (agent core + HTTP API + systemd integration).

The device links are started by `link_factories` (added by the link modules); the core runs
without them, so a hall can take case intake and upload while links are being set up.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from . import links, sdnotify
from .agent import Agent, Tuning
from .config import Config
from .http_api import make_app

log = logging.getLogger("edge_agent.service")

# Each factory is `async def start(agent) -> stop_coroutine_fn`. The device links (serial and
# MQTT, edge_agent/links/) are the default; tests may add or replace factories.
LinkFactory = Callable[[Agent], Awaitable[Callable[[], Awaitable[None]]]]
link_factories: list[LinkFactory] = [links.service_factory]


async def _watchdog(agent: Agent, interval: float) -> None:
    """Ping systemd only while the writer commits and the loop runs."""
    while True:
        try:
            await asyncio.wait_for(agent.writer.write(lambda db: None), interval)
            sdnotify.notify("WATCHDOG=1")
        except Exception as exc:  # no ping: systemd restarts us after WatchdogSec
            log.error("watchdog probe failed", extra={"reason": type(exc).__name__})
        await asyncio.sleep(interval)


def endpoint_file(config: Config) -> Path:
    """Where a running agent writes its HTTP address (`listen` may be port 0), for the CLI."""
    return Path(config.storage + ".http")


def console_endpoint_file(config: Config) -> Path:
    """Where a running agent writes its console address (`console.listen` may be port 0)."""
    return Path(config.storage + ".console")


async def _start_console(agent: Agent, config: Config) -> Callable[[], Awaitable[None]] | None:
    """Serve the hall console on its own address, if `[console]` is configured."""
    if config.console is None:
        return None
    from .console import serve_console
    url, stop_console = await serve_console(agent, config.console)
    try:
        console_endpoint_file(config).write_text(url + "\n")
    except OSError:
        pass
    log.info("console listening", extra={"url": url})

    async def stop() -> None:
        await stop_console()
        console_endpoint_file(config).unlink(missing_ok=True)
    return stop


async def serve(config: Config, stop: asyncio.Event | None = None,
                tuning: Tuning | None = None, on_listening: Callable[[str], None] | None = None
                ) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    agent = Agent(config, tuning)
    await agent.start()
    runner = web.AppRunner(make_app(agent), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.listen_port
    url = f"http://{config.listen_host}:{port}"
    log.info("listening", extra={"url": url})
    endpoint = endpoint_file(config)
    local = "127.0.0.1" if config.listen_host in ("0.0.0.0", "::", "") else config.listen_host
    try:
        endpoint.write_text(f"http://{local}:{port}\n")
    except OSError as exc:   # only `hcp agent status` needs it; not a reason to stop serving
        log.warning("could not write the endpoint file", extra={"path": str(endpoint),
                                                                "reason": type(exc).__name__})
    console_stop = await _start_console(agent, config)
    if on_listening:
        on_listening(url)
    link_stops = []
    for factory in link_factories:
        link_stops.append(await factory(agent))
    sdnotify.notify("READY=1\nSTATUS=serving " + url)
    tasks = []
    interval = sdnotify.watchdog_interval()
    if interval:
        tasks.append(asyncio.create_task(_watchdog(agent, interval)))
    try:
        await stop.wait()
    finally:
        sdnotify.notify("STOPPING=1")
        for t in tasks:
            t.cancel()
        for s in link_stops:
            await s()
        if console_stop is not None:
            await console_stop()
        await runner.cleanup()
        endpoint.unlink(missing_ok=True)
        await agent.stop()
        log.info("stopped", extra={"at": time.time()})
