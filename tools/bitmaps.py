"""Chinese text as 1-bit bitmaps for the evaluator's 128×64 SSD1306, rendered on the host.

The device has no CJK font (MicroPython's built-in font is 8×8 ASCII), so every Chinese string it
shows is rendered here and sent as MONO_HLSB bytes: row by row, ⌈w/8⌉ bytes per row, bit 7 = the
leftmost pixel (what `framebuf.FrameBuffer(buf, w, h, framebuf.MONO_HLSB)` blits).

Font: WenQuanYi Zen Hei, face "Sharp" (Debian package `fonts-wqy-zenhei`). That face carries
hand-tuned bitmap strikes at 12–16 px, so glyphs at those heights are pixel-exact, not a blurry
thresholded outline. `HCP_CJK_FONT=/path/to/font[:index]` overrides the search.

Catalogue labels (SPEC §4.10) share one height and must fit the reason screen's label column
(`screen_layout.LABEL_MAX_W`). A label that is too wide is *shrunk, never cut*: first full-width
punctuation (、，。…) is set half-width, as Chinese typesetting does (标点挤压); if that is not
enough, the line is condensed horizontally by OR-merging columns, so no stroke ever disappears
(every glyph narrowed by the same share, cheapest merges first: blank side bearings and
horizontal strokes; strokes may touch). Condensed labels are reported so the catalogue owner can add a shorter
display text (optional `"short"` field of a tag): the full `text` is what the province gets.
"""
from __future__ import annotations

import glob
import os
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_PACKAGE = "fonts-wqy-zenhei"
FONT_ENV = "HCP_CJK_FONT"
_FONT_FILE = "wqy-zenhei.ttc"
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
_SHARP_FACE = "WenQuanYi Zen Hei Sharp"
BITMAP_STRIKES = (12, 13, 14, 15, 16)  # heights the Sharp face has hand-made bitmaps for

# Full-width punctuation whose ink sits in one half of the em square: when squeezing a line, keep
# only that half (标点挤压). Checked per glyph against the actual ink, so another font is safe.
_INK_LEFT = "、，。；：）》」』】〕”’"
_INK_RIGHT = "（《「『【〔“‘"
# Any code point no CJK font has a glyph for: its rendering is the font's "missing glyph" shape.
_NOT_A_CHAR = "\U0010fffd"


class FontMissing(RuntimeError):
    """No usable CJK font: the message names the package to install."""


def _font_message(extra: str = "") -> str:
    return ("未找到中文字体 no CJK font found" + (f" ({extra})" if extra else "") +
            f": install it with `apt-get install {FONT_PACKAGE}` (Debian/Ubuntu), "
            f"or set {FONT_ENV}=/path/to/font.ttc[:face-index]")


def find_font_file() -> tuple[str, int]:
    """(path, face index) of the CJK font to use; raises FontMissing naming the package."""
    env = os.environ.get(FONT_ENV)
    if env:
        # "path" or "path:index" (a collection's face number)
        path, index = env, ""
        if not Path(env).exists() and ":" in env:
            path, _, index = env.rpartition(":")
        if not Path(path).is_file():
            raise FontMissing(_font_message(f"{FONT_ENV}={env} is not a file"))
        if index and not index.isdigit():
            raise FontMissing(_font_message(f"{FONT_ENV}: face index {index!r} is not a number"))
        return path, int(index) if index else _sharp_index(path)
    for d in _FONT_DIRS:
        hits = sorted(glob.glob(os.path.join(os.path.expanduser(d), "**", _FONT_FILE),
                                recursive=True))
        if hits:
            return hits[0], _sharp_index(hits[0])
    raise FontMissing(_font_message(f"looked for {_FONT_FILE} under {', '.join(_FONT_DIRS)}"))


def _sharp_index(path: str) -> int:
    """Face index of the bitmap-strike face in a collection (0 when it has no such face)."""
    for i in range(4):
        try:
            name = ImageFont.truetype(path, 12, index=i).getname()[0]
        except OSError:
            break
        if name == _SHARP_FACE:
            return i
    return 0


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    path, index = find_font_file()
    try:
        return ImageFont.truetype(path, size, index=index)
    except OSError as exc:
        raise FontMissing(_font_message(f"cannot load {path}: {exc}")) from None


@lru_cache(maxsize=16)
def _missing_glyph(size: int) -> bytes:
    return _glyph(_NOT_A_CHAR, size)[1]


@lru_cache(maxsize=16)
def _baseline_offset(size: int, height: int) -> int:
    """Vertical draw offset that centres CJK ink (a full-square glyph) in `height` rows."""
    top, bottom = _font(size).getbbox("国", mode="1")[1::2]
    return (height - (bottom - top)) // 2 - top


def _glyph(ch: str, size: int, height: int | None = None) -> tuple[int, bytes, Image.Image]:
    """(advance, raw ink bytes for identity checks, image of advance × height) of one char."""
    font = _font(size)
    h = height or size
    adv = max(1, round(font.getlength(ch, mode="1")))
    img = Image.new("1", (adv, h), 0)
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"
    draw.text((0, _baseline_offset(size, h)), ch, font=font, fill=1)
    ink = b""
    if ch.strip():
        mask = font.getmask(ch, mode="1")
        ink = repr(mask.size).encode() + bytes(mask)
    return adv, ink, img


def _check_glyphs(text: str, size: int) -> None:
    missing = _missing_glyph(size)
    for ch in text:
        if ch.strip() and _glyph(ch, size)[1] == missing:
            raise ValueError(f"字体缺少字符 the font has no glyph for {ch!r} (U+{ord(ch):04X}) "
                             f"in {text!r}: change the text")


def _squeeze_punct(ch: str, img: Image.Image) -> Image.Image:
    """Half-width version of full-width punctuation when its ink is all in one half."""
    w = img.width
    bbox = img.getbbox()
    if bbox is None or w < 4:
        return img
    half = w // 2
    if ch in _INK_LEFT and bbox[2] <= half + 1:
        return img.crop((0, 0, half + 1, img.height))
    if ch in _INK_RIGHT and bbox[0] >= w - half - 1:
        return img.crop((w - half - 1, 0, w, img.height))
    return img


def _glyph_images(text: str, height: int, squeeze: bool) -> list[Image.Image]:
    parts = []
    for ch in text:
        img = _glyph(ch, height, height)[2]
        parts.append(_squeeze_punct(ch, img) if squeeze else img)
    return parts


def _join(parts: list[Image.Image], height: int) -> Image.Image:
    line = Image.new("1", (sum(p.width for p in parts) or 1, height), 0)
    x = 0
    for p in parts:
        line.paste(p, (x, 0))
        x += p.width
    return line


def _trim_right(img: Image.Image) -> Image.Image:
    """Drop blank columns at the right (the last glyph's side bearing wastes screen)."""
    bbox = img.getbbox()
    if bbox is None:
        return img
    return img.crop((0, 0, max(1, bbox[2]), img.height))


def _carve(img: Image.Image, width: int) -> Image.Image:
    """Shrink one glyph horizontally to `width` by merging adjacent columns (OR), cheapest
    first: the cost of a merge is how many pixels differ between the two columns, so blank or
    identical columns (side bearings, horizontal strokes) go first and two distinct vertical
    strokes last. OR means no stroke ever disappears, which a plain resize cannot promise."""
    src_w, h = img.size
    px = img.load()
    cols = [sum(1 << y for y in range(h) if px[x, y]) for x in range(src_w)]
    while len(cols) > max(1, width):
        costs = [bin(cols[i] ^ cols[i + 1]).count("1") for i in range(len(cols) - 1)]
        i = costs.index(min(costs))
        cols[i:i + 2] = [cols[i] | cols[i + 1]]
    out = Image.new("1", (len(cols), h), 0)
    opx = out.load()
    for x, c in enumerate(cols):
        for y in range(h):
            if c >> y & 1:
                opx[x, y] = 1
    return out


def _condense(parts: list[Image.Image], height: int, max_width: int) -> Image.Image:
    """Line of glyphs squeezed to max_width, every glyph losing the same share of its width
    (CJK text reads by its even rhythm; squeezing one glyph hard makes it unreadable)."""
    parts = list(parts)
    parts[-1] = _trim_right(parts[-1])
    widths = [p.width for p in parts]
    total = sum(widths)
    excess = total - max_width
    # proportional share, largest remainders first, so the sum is exact and deterministic
    shares = [excess * w // total for w in widths]
    order = sorted(range(len(parts)), key=lambda i: (-(excess * widths[i] % total), i))
    for i in order[:excess - sum(shares)]:
        shares[i] += 1
    return _join([_carve(p, p.width - k) for p, k in zip(parts, shares)], height)


def image_to_hlsb(img: Image.Image) -> tuple[int, int, bytes]:
    """(w, h, MONO_HLSB bytes) of a mode-"1" image (PIL packs "1" the same way: MSB left)."""
    img = img.convert("1")
    return img.width, img.height, img.tobytes()


def hlsb_to_image(w: int, h: int, data: bytes) -> Image.Image:
    """Inverse of image_to_hlsb (for previews and tests)."""
    stride = (w + 7) // 8
    if len(data) != stride * h:
        raise ValueError(f"bitmap of {len(data)} bytes does not match {w}x{h}")
    return Image.frombytes("1", (w, h), bytes(data))


def render_text(text: str, height: int = 16) -> tuple[int, int, bytes]:
    """Render one line of text `height` px tall: (w, h, MONO_HLSB bytes).

    Raises ValueError if the font lacks a character (nothing is silently drawn as a box) and
    FontMissing (naming the package) if no CJK font is installed.
    """
    if not text:
        raise ValueError("empty text")
    if not 8 <= height <= 32:
        raise ValueError(f"height {height} outside 8..32 px")
    _check_glyphs(text, height)
    return image_to_hlsb(_trim_right(_join(_glyph_images(text, height, squeeze=False), height)))


def fit_text(text: str, height: int, max_width: int) -> tuple[int, int, bytes, str]:
    """Render within `max_width` px, shrinking rather than cutting (see module docstring).

    Returns (w, h, MONO_HLSB bytes, how) with how = "natural", "punct" (punctuation set
    half-width) or "condensed" (columns OR-merged).
    """
    if not text:
        raise ValueError("empty text")
    _check_glyphs(text, height)
    img = _trim_right(_join(_glyph_images(text, height, squeeze=False), height))
    if img.width <= max_width:
        return (*image_to_hlsb(img), "natural")
    parts = _glyph_images(text, height, squeeze=True)
    img = _trim_right(_join(parts, height))
    if img.width <= max_width:
        return (*image_to_hlsb(img), "punct")
    return (*image_to_hlsb(_condense(parts, height, max_width)), "condensed")


_CATALOGUE_NAMES = ("build_catalogue_blob", "chunk_catalogue", "parse_catalogue_blob")


def __getattr__(name: str):
    # The catalogue blob lives in its own module; re-exported lazily here (no import cycle).
    if name in _CATALOGUE_NAMES:
        from tools import catalogue_blob
        return getattr(catalogue_blob, name)
    raise AttributeError(name)
