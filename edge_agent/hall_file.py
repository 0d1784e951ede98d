"""Edits of hall.toml made by commands (`hcp device provision/retire`, `hcp agent client
add/remove`): append a table, remove one. Every edit is checked with the agent's own parser
before it replaces the file, and replaces it atomically (temp file, fsync, rename) with the same
mode — a running agent reloading the file never sees half of it, and a bad edit is never saved.
"""
from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Callable

from .config import Config, ConfigError, parse_config

_HEADER = re.compile(r"^\s*\[")


class HallFileError(Exception):
    """The edit would make hall.toml invalid (nothing was saved), or its table was not found."""


def toml_str(s: str) -> str:
    """A TOML basic string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def replace_checked(path: Path, text: str) -> Config:
    """Validate `text` with the agent's parser, then atomically replace `path` with it."""
    try:
        cfg = parse_config(tomllib.loads(text), path.parent, str(path))
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise HallFileError(f"修改后的配置无效，未保存 the edited {path} would be invalid, not "
                            f"saved: {exc}") from None
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=".hall-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return cfg


def append_block(path: Path, block: str) -> Config:
    """Append a TOML block (e.g. "[[clients]]\\n...") at the end of the file, checked."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text += "\n"
    return replace_checked(path, text + block)


def remove_table(path: Path, header: str, match: Callable[[dict], bool]) -> Config:
    """Remove the first `[[header]]` table whose content `match`es (and the blank line before
    it), checked. Raises HallFileError when there is none (e.g. written as an inline array)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if _HEADER.match(ln)] + [len(lines)]
    keep, found = lines[:starts[0]], False
    for a, b in zip(starts, starts[1:]):
        block = lines[a:b]
        if block[0].strip().startswith(f"[[{header}]]") and not found:
            try:
                body = tomllib.loads("".join(block[1:]))
            except tomllib.TOMLDecodeError:
                body = {}
            if match(body):
                found = True
                while keep and not keep[-1].strip():   # the blank line put before it
                    keep.pop()
                keep.append("\n")
                continue
        keep.extend(block)
    if not found:
        raise HallFileError(f"无法在 {path} 中定位该 [[{header}]] 段 cannot find the "
                            f"[[{header}]] table (inline array?): edit the file by hand")
    return replace_checked(path, "".join(keep))
