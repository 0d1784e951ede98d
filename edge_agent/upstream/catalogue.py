"""Reason tags as the province's code strings, and the catalogue fetched from the platform.

Devices show a catalogue version and send small numeric tag codes (the tag's level prefix + its
number: tag "07" is 207 with 不满意 and 107 with 非常不满意 in the placeholder). What the
province wants is its own code string per grade (e.g. "510"). A catalogue tag may carry
`"upstream": {"4": "...", "5": "..."}`; then a rating's code is looked up under the catalogue
version the device showed — every version the agent ever used is kept in the `catalogues` table,
so a rating made under an older version still maps right. Without `upstream` codes (the
placeholder) the device code is the code string. A tag the province has no code for at that
level goes as words in `writingEvaluation`, never as a code we made up.

Where a profile can fetch the table (`fetches_catalogue`), `CatalogueSync` asks for grades 1
(非常不满意) and 2 (不满意), pairs the tags by their text, numbers them, stores a new version when
the content changed, and hands the catalogue to its listeners (the device links push it in
CONFIG frames as before). Until the first fetch succeeds the newest stored version, or the file
named by `agent.catalogue`, is what devices get.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from typing import Any, Callable

import aiohttp

from .profiles.base import BuildContext, Reasons

log = logging.getLogger("edge_agent.upstream.catalogue")

GRADES = {5: 1, 4: 2}       # our level -> the province's grade (1 非常不满意, 2 不满意)
PREFIXES = {"5": "1", "4": "2"}
DEVICE_MAX_TAGS = 64         # firmware/catalogue.py MAX_TAGS


def device_codes(catalogue: dict) -> dict[tuple[int, int], tuple[str | None, str]]:
    """{(level, device code): (province code string or None, tag text)} of one catalogue."""
    codes = catalogue.get("codes") or {}
    out: dict[tuple[int, int], tuple[str | None, str]] = {}
    for tag in catalogue.get("tags") or []:
        upstream = tag.get("upstream")
        text = tag.get("text") or tag.get("short") or ""
        for level in ("4", "5"):
            prefix = (codes.get(level) or {}).get("prefix")
            if not isinstance(prefix, str) or not str(tag.get("tag", "")).isdigit():
                continue
            code = int(prefix + tag["tag"])
            if isinstance(upstream, dict):
                out[(int(level), code)] = (upstream.get(level), text)
            else:
                out[(int(level), code)] = (str(code), text)
    return out


def digest(catalogue: dict) -> str:
    """Content fingerprint (tags and codes; not the version number)."""
    return hashlib.sha256(json.dumps([catalogue.get("tags"), catalogue.get("codes")],
                                     ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def from_grades(grades: dict[int, list[tuple[str, str]]], version: int) -> dict:
    """Our catalogue JSON from the province's per-level [(code, text)] lists."""
    texts: list[str] = []
    for level in (5, 4):
        for _, text in grades.get(level, []):
            if text not in texts:
                texts.append(text)
    width = 2 if len(texts) < 100 else 3
    tags = []
    for i, text in enumerate(texts, 1):
        upstream = {str(level): code for level in (4, 5)
                    for code, t in grades.get(level, []) if t == text}
        tags.append({"tag": f"{i:0{width}d}", "text": text, "upstream": upstream})
    return {"catalogue": "platform", "version": version, "official": True,
            "note": "Fetched from the provincial platform per grade; codes are the province's.",
            "tags": tags, "codes": {lvl: {"prefix": p} for lvl, p in PREFIXES.items()}}


class Catalogues:
    """Every stored catalogue version's code map (the worker reads it for each rating)."""

    def __init__(self) -> None:
        self._maps: dict[int, dict[tuple[int, int], tuple[str | None, str]]] = {}
        self.current: dict | None = None      # what the devices should hold

    def load(self, db) -> None:
        """(Re)read the `catalogues` table."""
        for version, body in db.execute("SELECT version, body FROM catalogues"):
            self._maps[version] = device_codes(json.loads(body))

    def add(self, catalogue: dict) -> None:
        self._maps[int(catalogue["version"])] = device_codes(catalogue)

    def versions(self) -> list[int]:
        return sorted(self._maps)

    def reasons(self, rating: dict) -> Reasons:
        """The province's code strings for a rating's tags (see the module docstring)."""
        table = self._maps.get(rating["cat_version"])
        out = Reasons([])
        for code in rating["reasons"]:
            hit = table.get((rating["level"], code)) if table is not None else None
            if hit is None:
                out.codes.append(str(code))
            elif hit[0]:
                out.codes.append(hit[0])
            else:
                out.texts.append(hit[1])
        return out


def store_op(catalogue: dict, source: str, now: float) -> Callable[[Any], dict]:
    """A writer op: store `catalogue` (version given, or the next free one when None and the
    content is new); returns the catalogue as stored (with its version)."""
    fp = digest(catalogue)

    def op(db) -> dict:
        row = db.execute("SELECT version, body FROM catalogues WHERE digest = ? AND source = ?"
                         " ORDER BY version DESC LIMIT 1", (fp, source)).fetchone()
        if row is not None and (catalogue.get("version") in (None, row[0])):
            return json.loads(row[1])
        version = catalogue.get("version")
        if version is None:
            top = db.execute("SELECT MAX(version) FROM catalogues").fetchone()[0] or 0
            version = top + 1
        elif db.execute("SELECT 1 FROM catalogues WHERE version = ?", (version,)).fetchone():
            raise ValueError(f"catalogue version {version} is already used by a different "
                             "catalogue: give the new one a higher version")
        stored = {**catalogue, "version": int(version)}
        db.execute("INSERT INTO catalogues(version, source, digest, body, created_at) VALUES"
                   " (?, ?, ?, ?, ?)", (version, source, fp,
                                        json.dumps(stored, ensure_ascii=False), now))
        return stored
    return op


def latest(db, source: str) -> dict | None:
    row = db.execute("SELECT body FROM catalogues WHERE source = ? ORDER BY version DESC LIMIT 1",
                     (source,)).fetchone()
    return json.loads(row[0]) if row else None


class CatalogueSync:
    """Fetches the platform's catalogue now and every `refresh_s`; notifies listeners of a new
    version. Failures are logged and retried with backoff; devices keep what they have."""

    def __init__(self, profile: Any, url: str, ctx: BuildContext, writer: Any,
                 catalogues: Catalogues, refresh_s: float, timeout_s: float) -> None:
        self.profile, self.url, self.ctx = profile, url, ctx
        self.writer, self.catalogues = writer, catalogues
        self.refresh_s, self.timeout_s = refresh_s, timeout_s
        self.listeners: list[Callable[[dict], None]] = []
        self.last_error: str | None = None
        self.fetched_at: float | None = None

    async def fetch(self, session: aiohttp.ClientSession) -> dict:
        """One fetch of every grade; returns the catalogue as stored."""
        grades: dict[int, list[tuple[str, str]]] = {}
        for level, grade in GRADES.items():
            body = self.profile.catalogue_request(grade, self.ctx)
            headers = {"Content-Type": self.profile.content_type + "; charset=utf-8",
                       **self.ctx.auth.headers(body)}
            async with session.post(self.url, data=body, headers=headers) as resp:
                grades[level] = self.profile.catalogue_items(resp.status, await resp.read())
        cat = from_grades(grades, 0)
        if len(cat["tags"]) > DEVICE_MAX_TAGS:
            raise ValueError(f"the platform lists {len(cat['tags'])} tags; devices show at most "
                             f"{DEVICE_MAX_TAGS}")
        del cat["version"]
        return await self.writer.write(store_op(cat, "platform", time.time()))

    async def run(self, session: aiohttp.ClientSession) -> None:
        delay = 5.0
        while True:
            try:
                cat = await asyncio.wait_for(self.fetch(session), self.timeout_s * 3)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep what devices have
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("catalogue fetch failed", extra={"reason": self.last_error,
                                                             "retryIn": round(delay)})
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.refresh_s)
                continue
            delay, self.last_error, self.fetched_at = 5.0, None, time.time()
            new = self.catalogues.current is None or \
                self.catalogues.current.get("version") != cat["version"]
            self.catalogues.add(cat)
            if new:
                self.catalogues.current = cat
                log.info("catalogue from the platform", extra={"version": cat["version"],
                                                               "tags": len(cat["tags"])})
                for listener in list(self.listeners):
                    try:
                        listener(cat)
                    except Exception as exc:  # noqa: BLE001 - one link must not stop others
                        log.error("catalogue listener failed", extra={"reason": str(exc)})
            await asyncio.sleep(self.refresh_s)
