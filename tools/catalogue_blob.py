"""The reason-tag catalogue as the device stores it (SPEC §4.10) and the CONFIG chunks that carry it.

Input is the catalogue JSON (shape of edge_agent/deploy/catalogue.seed-0.json): `version`, `tags`
[{`tag`: "07", `text`: "...", optional `short`: display text}], `codes` {"4": {"prefix": "2"},
"5": {"prefix": "1"}}. A tag's wire code is prefix + tag: tag "07" → 207 with level 4 (不满意),
107 with level 5 (非常不满意). Codes come only from the catalogue: nothing is defaulted.

Blob: `cat_version` u16, n u8, label height h u8, then n × (`code_l4` u16, `code_l5` u16, width
u8, label bitmap ⌈w/8⌉·h bytes MONO_HLSB), big-endian, tags in catalogue order (= screen order).
"""
from __future__ import annotations

import os
import struct
from typing import Any

from protocol.crc32 import crc32
from protocol.messages import CONFIG_CHUNK

from edge_agent.catalogue import load_catalogue, tag_codes  # noqa: F401  (re-exported)
from tools import screen_layout
from tools.bitmaps import fit_text

_HEAD = ">HBB"
_ENTRY = ">HHB"
MAX_TAGS = 255
MAX_TOTAL = 0xFFFF          # CONFIG `total` is u16
MAX_CHUNKS = 255            # CONFIG `count` is u8


def catalogue_entries(catalogue: dict | str | bytes | os.PathLike[str],
                      label_height: int = screen_layout.DEFAULT_LABEL_H) -> list[dict[str, Any]]:
    """Rendered entries: tag, code_l4, code_l5, text, w, bitmap, fit ("natural"/"punct"/
    "condensed", see tools.bitmaps.fit_text)."""
    screen_layout.check_label_height(label_height)
    cat = load_catalogue(catalogue)
    entries = []
    for tag, c4, c5, text in tag_codes(cat):
        w, _, bitmap, how = fit_text(text, label_height, screen_layout.LABEL_MAX_W)
        entries.append({"tag": tag, "code_l4": c4, "code_l5": c5, "text": text, "w": w,
                        "bitmap": bitmap, "fit": how})
    return entries


def build_catalogue_blob(catalogue_json: dict | str | bytes | os.PathLike[str],
                         label_height: int = screen_layout.DEFAULT_LABEL_H) -> bytes:
    """The SPEC §4.10 catalogue blob for a catalogue (dict, JSON text or file path)."""
    cat = load_catalogue(catalogue_json)
    entries = catalogue_entries(cat, label_height)
    parts = [struct.pack(_HEAD, cat["version"], len(entries), label_height)]
    for e in entries:
        parts.append(struct.pack(_ENTRY, e["code_l4"], e["code_l5"], e["w"]))
        parts.append(e["bitmap"])
    blob = b"".join(parts)
    if len(blob) > min(MAX_TOTAL, MAX_CHUNKS * CONFIG_CHUNK):
        raise ValueError(f"catalogue blob of {len(blob)} bytes is too large for CONFIG "
                         f"(at most {min(MAX_TOTAL, MAX_CHUNKS * CONFIG_CHUNK)}): fewer or "
                         f"shorter tags")
    return blob


def parse_catalogue_blob(blob: bytes) -> dict[str, Any]:
    """Decode a blob (as the device would): cat_version, label_h, entries[code_l4, code_l5, w,
    bitmap]. Raises ValueError on any inconsistency, including trailing bytes."""
    if len(blob) < 4:
        raise ValueError("catalogue blob shorter than its 4-byte header")
    version, n, h = struct.unpack_from(_HEAD, blob, 0)
    off, entries = 4, []
    for i in range(n):
        if off + 5 > len(blob):
            raise ValueError(f"blob ends inside entry {i}")
        c4, c5, w = struct.unpack_from(_ENTRY, blob, off)
        size = (w + 7) // 8 * h
        off += 5
        if off + size > len(blob):
            raise ValueError(f"blob ends inside the bitmap of entry {i}")
        entries.append({"code_l4": c4, "code_l5": c5, "w": w, "bitmap": bytes(blob[off:off + size])})
        off += size
    if off != len(blob):
        raise ValueError(f"{len(blob) - off} bytes after the last entry")
    return {"cat_version": version, "label_h": h, "entries": entries}


def chunk_catalogue(blob: bytes, cat_version: int) -> list[dict[str, Any]]:
    """CONFIG message fields for each chunk of `blob` (SPEC §4.10), in index order."""
    if len(blob) < 2 or struct.unpack_from(">H", blob, 0)[0] != cat_version:
        raise ValueError(f"blob does not hold catalogue version {cat_version}")
    total = len(blob)
    count = (total + CONFIG_CHUNK - 1) // CONFIG_CHUNK
    if total > MAX_TOTAL or count > MAX_CHUNKS:
        raise ValueError(f"catalogue blob of {total} bytes does not fit CONFIG "
                         f"(u16 total, ≤ {MAX_CHUNKS} chunks of {CONFIG_CHUNK})")
    crc = crc32(blob)
    return [{"cat_version": cat_version, "index": i, "count": count, "total": total, "crc": crc,
             "data": bytes(blob[i * CONFIG_CHUNK:(i + 1) * CONFIG_CHUNK])} for i in range(count)]
