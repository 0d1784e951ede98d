"""Intake clients: the business and queue systems hall.toml lets report to the agent.

Each is a `[[clients]]` table in hall.toml naming its key file (64 hex digits, mode 0600):

    [[clients]]
    id = "erp-1"                       # what it sends in X-HCP-Client
    kind = "business"                  # business: POST /v1/cases; queue: POST /v1/queue/events
    key_file = "clients/erp-1.key"
    windows = ["A01", "A02"]           # windows it may report for; ["*"] for all
    rate_per_min = 600                 # optional

`hcp agent client add|list|remove` edits hall.toml and the key files (add prints the key once);
a running agent notices the change within RELOAD_CHECK_S and uses the new client list from its
next request — a removed client is refused from then on, without a restart.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path

from .config import CLIENT_KINDS, Client, Config, ConfigError, load_config
from .hall_file import HallFileError, append_block, remove_table, toml_str

log = logging.getLogger("edge_agent.clients")

RELOAD_CHECK_S = 1.0
KEY_DIR = "clients"
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class ClientError(Exception):
    """A client command cannot be done; the message says why and what to do."""


class ClientRegistry:
    """The current clients, reloaded from hall.toml when the file changes (checked at most once
    every RELOAD_CHECK_S). A file that no longer parses keeps the clients loaded before and is
    logged: a typo while editing must not lock every business system out."""

    def __init__(self, config: Config) -> None:
        self._path = config.source_path
        self._clients = {c.id: c for c in config.clients}
        self._mtime = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> float | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns

    def __call__(self, client_id: str) -> Client | None:
        """The client with this id now, or None."""
        now = time.monotonic()
        if self._path is not None and now - self._checked >= RELOAD_CHECK_S:
            self._checked = now
            mtime = self._stat()
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                self._reload()
        return self._clients.get(client_id)

    def _reload(self) -> None:
        try:
            cfg = load_config(self._path)
        except ConfigError as exc:
            log.error("hall.toml changed but does not load; clients unchanged",
                      extra={"key": exc.key, "problem": exc.problem})
            return
        before = set(self._clients)
        self._clients = {c.id: c for c in cfg.clients}
        log.info("intake clients reloaded", extra={
            "added": sorted(set(self._clients) - before),
            "removed": sorted(before - set(self._clients))})

    def all(self) -> list[Client]:
        return list(self._clients.values())


# ---------------------------------------------------------------- hall.toml editing (CLI)


def add_client(config_path: str | os.PathLike, client_id: str, kind: str, windows: list[str],
               rate_per_min: int = 600) -> tuple[Client, str]:
    """Make a key (key file 0600 beside hall.toml, under clients/) and add the client to
    hall.toml. Returns (client, key as hex) — the only time the key is shown."""
    path = Path(config_path)
    cfg = load_config(path)
    if not _ID.fullmatch(client_id):
        raise ClientError(f"客户端编号只能含字母、数字、. _ - client id {client_id!r} must be "
                          "letters, digits, . _ - (≤ 64)")
    if kind not in CLIENT_KINDS:
        raise ClientError(f"类型应为 kind must be one of {', '.join(CLIENT_KINDS)}")
    if cfg.client(client_id) is not None:
        raise ClientError(f"客户端已存在 client {client_id!r} exists: remove it first to issue "
                          "a new key")
    if not windows:
        raise ClientError("需要 --windows 或 --all-windows give --windows A01,A02 or "
                          "--all-windows")
    key_dir = path.parent / KEY_DIR
    key_dir.mkdir(mode=0o700, exist_ok=True)
    key_file = key_dir / f"{client_id}.key"
    if key_file.exists():
        raise ClientError(f"密钥文件已存在 {key_file} exists: delete it or choose another id")
    key = secrets.token_hex(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    block = (f"\n[[clients]]\nid = {toml_str(client_id)}\nkind = {toml_str(kind)}\n"
             f"key_file = {toml_str(KEY_DIR + '/' + client_id + '.key')}\n"
             f"windows = [{', '.join(toml_str(w) for w in windows)}]\n"
             f"rate_per_min = {int(rate_per_min)}\n")
    try:
        new = append_block(path, block)
    except HallFileError as exc:
        key_file.unlink(missing_ok=True)
        raise ClientError(f"未添加 not added: {exc}") from None
    client = new.client(client_id)
    assert client is not None
    return client, key


def remove_client(config_path: str | os.PathLike, client_id: str) -> Client:
    """Remove the client's table from hall.toml and delete its key file."""
    path = Path(config_path)
    client = load_config(path).client(client_id)
    if client is None:
        raise ClientError(f"无此客户端 no client {client_id!r} in {path}")
    try:
        remove_table(path, "clients", lambda body: body.get("id") == client_id)
    except HallFileError as exc:
        raise ClientError(f"未删除 not removed: {exc}") from None
    Path(client.key_file).unlink(missing_ok=True)
    return client
