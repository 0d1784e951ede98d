"""SQLite storage: one writer thread with group commit, separate reader connections.

Why group commit: with `synchronous=FULL` every COMMIT is an fsync, and one fsync per rating caps
throughput at the disk's fsync rate. Callers submit a function (`op(db) -> result`); the writer
takes what is pending (up to `max_rows` rows), runs every op inside its own
SAVEPOINT of ONE transaction, commits, and only then resolves each caller's future. A failing op
is rolled back to its savepoint and gets its own exception; a failing COMMIT fails every caller of
the batch (nothing was made durable, nothing is acknowledged).

The batches form by themselves: whatever arrives while one COMMIT's fsync runs is the next
batch, so a busy hall gets large commits and a quiet one gets no added delay. `linger_s` can add
a wait for more work before each commit; it defaults to 0 because `make bench` showed a 10 ms
linger cutting throughput to 0.1x with one frame in flight per device (every ACK waited the full
linger) while buying nothing once frames queue up during the fsync.

The queue is bounded so a stalled disk pushes back on the links instead of growing memory.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from typing import Any, Callable

import sqlite_utils

from .schema import migrate

log = logging.getLogger("edge_agent.store")

Op = Callable[[sqlite_utils.Database], Any]


def connect(path: str, readonly: bool = False) -> sqlite_utils.Database:
    """Open a connection with the agent's pragmas (WAL, synchronous=FULL, busy timeout)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn, execute_plugins=False)
    if not readonly:
        db.enable_wal()
        conn.execute("PRAGMA synchronous=FULL")
    return db


def open_database(path: str) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate a database; for the writer and for CLI writes."""
    db = connect(path)
    migrate(db)
    return db


class _Item:
    __slots__ = ("op", "weight", "future")

    def __init__(self, op: Op, weight: int, future: asyncio.Future) -> None:
        self.op, self.weight, self.future = op, weight, future


class Writer:
    """The single writer. Use `await writer.write(op)`; it returns after the COMMIT."""

    def __init__(self, path: str, linger_s: float = 0.0, max_rows: int = 100,
                 queue_size: int = 10000) -> None:
        self.path = path
        self.linger_s = linger_s
        self.max_rows = max_rows
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=queue_size)
        self._exec = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix="sqlite-writer")
        self._db: sqlite_utils.Database | None = None
        self._task: asyncio.Task | None = None
        self.commits = 0
        self.last_commit_at = 0.0

    async def start(self) -> None:
        """Open the writer connection (in the writer thread), migrate, start the batch loop."""
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._exec, open_database, self.path)
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    async def stop(self) -> None:
        """Finish what is queued, then close the connection."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        if self._db is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._exec, self._db.close)
            self._db = None
        self._exec.shutdown(wait=True)

    async def write(self, op: Op, weight: int = 1) -> Any:
        """Run `op(db)` inside the next group transaction; return its result once committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("writer is not running")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(op, max(1, weight), fut))
        return await fut

    @property
    def running(self) -> bool:
        """True while the batch loop is alive."""
        return self._task is not None and not self._task.done()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch, rows = [first], first.weight
            deadline = loop.time() + self.linger_s
            while rows < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                rows += item.weight
            results = await loop.run_in_executor(self._exec, self._commit_batch, batch)
            for item, (ok, value) in zip(batch, results):
                if item.future.done():  # caller gave up (cancelled); the work is committed anyway
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    def _commit_batch(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        db = self._db
        assert db is not None
        conn = db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            log.error("writer cannot begin a transaction: %s", exc)
            return [(False, exc)] * len(batch)
        results: list[tuple[bool, Any]] = []
        for item in batch:
            try:
                with db.atomic():  # a SAVEPOINT inside the batch transaction
                    results.append((True, item.op(db)))
            except Exception as exc:  # one bad op must not fail its neighbours
                results.append((False, exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("writer commit failed, %d ops not committed: %s", len(batch), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return [(False, exc)] * len(batch)
        self.commits += 1
        self.last_commit_at = time.time()
        return results
