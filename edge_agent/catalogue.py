"""The reason-tag catalogue (测评内容): codes and their names, read from `agent.catalogue`.

The catalogue JSON (see deploy/catalogue.seed-0.json) lists tags; a tag's wire code is the level
group's prefix + the tag ("07" → 207 with 不满意, 107 with 非常不满意). Devices send codes; people
read names: alerts, the console and exports turn codes into names with `ReasonBook`. The
technician tools (`tools.catalogue_blob`) build the device blob from the same `tag_codes`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

MAX_TAGS = 255

# a 差评 whose reason screen timed out carries no tag; what we show instead of making one up
REASON_TIMEOUT_TEXT = "评价人未选择具体原因（原因选择超时）"
FLAG_REASON_TIMEOUT = 2


def load_catalogue(source: dict | str | bytes | os.PathLike[str]) -> dict:
    """The catalogue as a dict, from a dict, JSON text/bytes, or a file path."""
    if isinstance(source, dict):
        return source
    if isinstance(source, os.PathLike):
        source = Path(source).read_bytes()
    try:
        data = json.loads(source)
    except ValueError as exc:
        raise ValueError(f"目录不是有效 JSON catalogue is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("目录应为 JSON 对象 catalogue must be a JSON object")
    return data


def _prefix(codes: dict, level: str) -> str:
    entry = codes.get(level)
    prefix = entry.get("prefix") if isinstance(entry, dict) else None
    if not isinstance(prefix, str) or not prefix.isdigit():
        raise ValueError(f"catalogue codes[{level!r}].prefix missing or not digits: the code "
                         f"sent with level {level} comes only from the catalogue")
    return prefix


def tag_codes(catalogue: dict) -> list[tuple[str, int, int, str]]:
    """[(tag, code with level 4, code with level 5, display text)], validated, in order."""
    version = catalogue.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 0xFFFF:
        raise ValueError(f"catalogue version {version!r}: must be an integer 1..65535")
    tags = catalogue.get("tags")
    if not isinstance(tags, list) or not tags:
        raise ValueError("catalogue has no tags")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"catalogue has {len(tags)} tags, at most {MAX_TAGS}")
    codes = catalogue.get("codes")
    if not isinstance(codes, dict):
        raise ValueError("catalogue has no `codes` table (level → code prefix)")
    p4, p5 = _prefix(codes, "4"), _prefix(codes, "5")
    out: list[tuple[str, int, int, str]] = []
    seen: set[int] = set()
    for i, t in enumerate(tags):
        tag = t.get("tag") if isinstance(t, dict) else None
        if not isinstance(tag, str) or not tag.isdigit():
            raise ValueError(f"tags[{i}].tag {tag!r}: must be a string of digits, e.g. \"07\"")
        text = t.get("short") or t.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"tags[{i}] ({tag}) has no text")
        c4, c5 = int(p4 + tag), int(p5 + tag)
        for c in (c4, c5):
            if not 0 < c <= 0xFFFF:
                raise ValueError(f"tags[{i}] ({tag}): code {c} outside 1..65535")
            if c in seen:
                raise ValueError(f"tags[{i}] ({tag}): code {c} used twice")
            seen.add(c)
        out.append((tag, c4, c5, text.strip()))
    return out


class ReasonBook:
    """Reason code → name for one catalogue; codes it does not know are named as such."""

    def __init__(self, tags: list[tuple[str, int, int, str]] | None = None,
                 version: int | None = None) -> None:
        self.tags = list(tags or [])      # (tag, code with level 4, code with level 5, name)
        self.names = {c: text for _, c4, c5, text in self.tags for c in (c4, c5)}
        self.version = version

    @classmethod
    def from_file(cls, path: str | None) -> "ReasonBook":
        """The book for the catalogue at `path` (config-validated); empty without one."""
        if not path:
            return cls()
        cat = load_catalogue(Path(path))
        codes = tag_codes(cat)   # the same validation the devices' catalogue passes
        # people read the full text; `short` is only for the device's small screen
        full = [str(t.get("text") or "").strip() for t in cat["tags"]]
        return cls([(tag, c4, c5, full[i] or short)
                    for i, (tag, c4, c5, short) in enumerate(codes)], int(cat["version"]))

    def code(self, tag: str, level: int) -> int:
        """The wire code of a tag with a 差评 level (4 or 5); KeyError if unknown."""
        for t, c4, c5, _ in self.tags:
            if t == tag and level in (4, 5):
                return c4 if level == 4 else c5
        raise KeyError(tag)

    def name(self, code: int) -> str:
        """The tag's full text, or a plain statement that the catalogue lacks the code."""
        return self.names.get(int(code)) or f"未知原因代码 {int(code)}（不在当前评价标签目录中）"

    def names_for(self, codes: list[int], flags: int = 0, level: int = 0) -> list[str]:
        """Names for a rating's codes; a 差评 whose reason screen timed out says so."""
        out = [self.name(c) for c in codes]
        if not out and level >= 4 and flags & FLAG_REASON_TIMEOUT:
            out.append(REASON_TIMEOUT_TEXT)
        return out
