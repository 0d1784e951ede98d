"""A minimal runnable agent for the link crash tests: Agent core + device links, no HTTP.

    python -m tests.agent_links_testagent hall.toml

Prints `ready` when the links are started; logs JSON at debug level to stderr (the test reads
"records received" from it to know a frame reached the agent before it is killed). SIGTERM stops.
"""
from __future__ import annotations

import asyncio
import signal
import sys

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.links import start_links, stop_links
from edge_agent.logs import setup_logging
from tests.agent_support import fast_tuning


async def main(path: str) -> None:
    config = load_config(path)
    setup_logging("debug")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    agent = Agent(config, fast_tuning())
    await agent.start()
    links = await start_links(agent, config, reopen_s=0.2)
    print("ready", flush=True)
    await stop.wait()
    await stop_links(links)
    await agent.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
