"""The reason-tag catalogue as the agent pushes it to devices (SPEC.md §4.10).

Built at start from the catalogue the uploader holds for devices (the platform's, where the profile
fetches it, else the file named by `agent.catalogue` in hall.toml), and again when the platform's
changes (`edge_agent.links.start_links` listens for it): labels rendered
to bitmaps by `tools.catalogue_blob` (the technician tools use the same code for their preview),
then cut into CONFIG chunks. A device whose HELLO reports another catalogue version is sent every
chunk; it installs the catalogue only when all chunks and the CRC check out.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edge_agent.links.catalogue")

LABEL_HEIGHT = 12   # 4 rows of labels + the page footer fit the 64-pixel screen


@dataclass(frozen=True)
class CataloguePush:
    """One catalogue version and the CONFIG message fields that carry it."""
    version: int
    chunks: tuple[dict, ...]


def load_catalogue_push(path: str | None) -> CataloguePush | None:
    """Render the catalogue at `path`; None (devices keep theirs) when there is none or it fails.

    A failure is logged with what to do: the agent still runs and uploads without it.
    """
    if not path:
        return None
    try:
        cat = json.loads(Path(path).read_bytes())
        if not isinstance(cat, dict):
            raise ValueError("catalogue must be a JSON object")
    except (OSError, ValueError) as exc:
        log.error("catalogue not pushed", extra={"path": path, "reason": str(exc)})
        return None
    return build_catalogue_push(cat)


def build_catalogue_push(cat: dict) -> CataloguePush | None:
    """Render a catalogue (our JSON shape, e.g. one fetched from the platform) for CONFIG."""
    from tools import bitmaps, catalogue_blob
    try:
        blob = catalogue_blob.build_catalogue_blob(cat, LABEL_HEIGHT)
    except bitmaps.FontMissing as exc:
        log.error("catalogue not pushed: no CJK font", extra={"reason": str(exc)})
        return None
    except (OSError, ValueError) as exc:
        log.error("catalogue not pushed", extra={"version": cat.get("version"),
                                                 "reason": str(exc)})
        return None
    version = int(cat["version"])
    return CataloguePush(version, tuple(catalogue_blob.chunk_catalogue(blob, version)))
