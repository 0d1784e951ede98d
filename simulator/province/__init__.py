"""Province reference server: a strict stand-in for the provincial 好差评 systems.

Profiles (see `profiles` for the fields of each, README.md beside this file for examples):
``gbt39046-json`` (POST /api/v1/evaluations), ``zj-offlinereport-form`` (POST /offlinereport),
``sd-epoint-json`` (POST /rest/addEvaluateService, then /rest/evaluate), ``national-sm2``
(the SM2 envelope: POST /hcp/projectSubmit, then /hcp/offlineTemp; national.py).

The server checks with its own code (signing.py, sm2.py on gmssl); the agent never imports it.
For tests: `upload_path(profile)`, `content_type(profile)`, `ServerConfig`, `start_server` (in
the caller's event loop) and `running_server` (a background thread).
"""
from __future__ import annotations

from typing import Any

from .profiles import LEVEL_NAMES, PROFILES, content_type, upload_path
from .signing import sign

PROFILE_NAMES = tuple(PROFILES)

__all__ = ["PROFILE_NAMES", "LEVEL_NAMES", "upload_path", "content_type", "sign",
           "ServerConfig", "start_server", "running_server"]


def __getattr__(name: str) -> Any:
    # The server pulls in aiohttp; a caller that only needs paths and signing does not.
    if name in ("ServerConfig", "start_server", "running_server", "build_app"):
        from . import server
        return getattr(server, name)
    raise AttributeError(name)
