"""Geometry of the reason-tag screen on the 128×64 SSD1306 (what the firmware draws, and what
`hcp firmware preview-catalogue` imitates).

    y  0 ┌──┬────────────────────────────────┐
         │1 │ label of tag 1 (h px)           │   row pitch h+1
    y 13 │2 │ label of tag 2                  │
    y 26 │3 │ label of tag 3                  │
    y 39 │4 │ label of tag 4                  │
    y 52 │5 │ 下一页                     1/3  │   footer: only when there is more than one page
    y 63 └──┴────────────────────────────────┘

Buttons 1–4 choose the tag on that row, button 5 turns the page (after the last page: back to
the first). The digits and the page counter are ASCII (the firmware's built-in 8×8 font); the
labels and "下一页" are host-rendered bitmaps, all `label_h` px tall. Numbers are for the
default label height of 12 px (the smallest hand-made bitmap strike of the font); 4 rows + the
footer at h+1 pitch need 5·h + 4 ≤ 64, so 12 px is also the largest label height that fits.
"""
from __future__ import annotations

SCREEN_W = 128
SCREEN_H = 64
TAGS_PER_PAGE = 4
DEFAULT_LABEL_H = 12
MIN_LABEL_H = 8
NUM_W = 10             # button-number column: an 8 px ASCII digit + 2 px gap
LABEL_X = NUM_W
LABEL_MAX_W = SCREEN_W - LABEL_X   # 118 px: 9 full CJK glyphs at 12 px, more with 、，
NEXT_PAGE_TEXT = "下一页"
NEXT_PAGE_BUTTON = 5


def max_label_height() -> int:
    """Largest label height for which 4 rows and the footer fit the screen."""
    return (SCREEN_H - TAGS_PER_PAGE) // (TAGS_PER_PAGE + 1)


def check_label_height(label_h: int) -> None:
    """Raise ValueError (saying why) if the page cannot be laid out at this label height."""
    if not MIN_LABEL_H <= label_h <= max_label_height():
        raise ValueError(
            f"标签高度 label height {label_h} px 不可用: 4 rows + the 下一页 footer need "
            f"{MIN_LABEL_H}..{max_label_height()} px on a {SCREEN_W}x{SCREEN_H} screen "
            f"(use {DEFAULT_LABEL_H})")


def row_y(row: int, label_h: int = DEFAULT_LABEL_H) -> int:
    """Top y of row 0..3 (tags) or 4 (footer)."""
    return row * (label_h + 1)


def pages(n_tags: int) -> int:
    """How many pages a catalogue of n tags takes (at least 1)."""
    return max(1, (n_tags + TAGS_PER_PAGE - 1) // TAGS_PER_PAGE)
