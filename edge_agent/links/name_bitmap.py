"""Staff name -> the INVITE name bitmap (SPEC.md §4.8): MONO_HLSB, at most 96x16 pixels.

The evaluator has no CJK font, so the agent renders the staff member's name with the same
renderer the technician tools use for reason-tag labels (`tools.bitmaps`). Only the staff name is
rendered; rater data never goes to a device. Without a CJK font the INVITE carries no bitmap and
the device shows the staff number alone, rather than boxes.
"""
from __future__ import annotations

import logging

from protocol.messages import MAX_NAME_H, MAX_NAME_W
from tools import bitmaps

log = logging.getLogger("edge_agent.links.name")


def render_name(staff_name: str) -> tuple[int, int, bytes]:
    """Render `staff_name` as (width, height, MONO_HLSB bitmap); (0, 0, b"") when it can't be."""
    name = (staff_name or "").strip()
    if not name:
        return 0, 0, b""
    try:
        w, h, data, _how = bitmaps.fit_text(name, MAX_NAME_H, MAX_NAME_W)
    except bitmaps.FontMissing as exc:
        log.warning("staff name not rendered: no CJK font", extra={"reason": str(exc)[:200]})
        return 0, 0, b""
    except ValueError:          # a character the font lacks: show the staff number only
        log.warning("staff name not rendered: character missing from the font")
        return 0, 0, b""
    return w, h, data
