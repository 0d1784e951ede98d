"""`wait_event`: wait for an asyncio.Event with a timeout, safely inside loops that get cancelled.

`asyncio.wait_for(event.wait(), t)` on Python 3.11 can swallow a cancellation that arrives just
as the inner wait finishes (fixed in 3.12); a loop calling it twenty times a second then ignores
`task.cancel()` and its `stop()` hangs (seen in the serial link tests). `asyncio.wait` never
cancels for us, so the cancellation always reaches the caller.
"""
from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds passed; returns whether it is set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
