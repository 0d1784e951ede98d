"""JSON logs: one JSON object per line on stderr (journald keeps it), PII scrubbed.

Structured fields go in `extra={...}`; they are emitted as top-level keys. Values are scrubbed
like the message, so an ID number passed by mistake is masked anyway.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

from .privacy import ScrubFilter, scrub

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as a single-line JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                out[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Install the JSON handler on the `edge_agent` logger (and aiohttp's); returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ScrubFilter())
    for name in ("edge_agent", "aiohttp"):
        lg = logging.getLogger(name)
        lg.handlers = [h for h in lg.handlers if not getattr(h, "_hcp_json", False)]
        lg.addHandler(handler)
        lg.setLevel(level.upper())
        lg.propagate = False
    handler._hcp_json = True  # type: ignore[attr-defined]
    return handler
