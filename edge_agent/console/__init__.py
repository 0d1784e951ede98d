"""The hall console: web pages for supervisors, window staff and technicians, served by the
agent on its own address (`[console] listen` in hall.toml).

Shape (after Datasette): every route in one table (`routes.py`); each page's view gathers one
data dict from `queries.py` (all SQL, all masking) and answers with the template or, as
`.json`, the same dict; templates only loop and format. Writes go through the agent's single
writer in small action modules (`followups.py`, `paper.py`, `accounts.py`, `audit.py`).
Static files, including the vendored ECharts and htmx, come from `static/`, never a CDN.
"""
from __future__ import annotations

from .app import Console, make_console_app, serve_console

__all__ = ["Console", "make_console_app", "serve_console"]
