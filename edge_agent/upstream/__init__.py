"""Upload to the provincial 好差评 system.

  worker.py      the outbox worker (batches, requests in flight, backoff, breaker, settling)
  jobs.py        the jobs in SQLite: rating jobs, service records, their states
  registry.py    the one list of profiles; `get_profile(name)`
  profiles/      one module per province interface (request shape, reply reading)
  auth/          one module per auth scheme (none, token, hmac, sm2 envelope)
  sm2.py         SM2 keys, signatures and encryption (on snowland-smx)
  catalogue.py   reason tags as the province's code strings; the catalogue fetch

The agent owns its request building and signing; the reference server in simulator/ verifies
with separately written code.
"""
from __future__ import annotations

from .worker import Uploader

__all__ = ["Uploader"]
