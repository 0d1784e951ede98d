"""RL1, the evaluator <-> hall agent protocol. One implementation, imported by the firmware
(MicroPython) and the edge agent (CPython). The normative description is protocol/SPEC.md.

Modules: errors (the only exception the decoders raise), crc32, cobs (serial framing and stream
resync), auth (HMAC-SHA256, key derivation, constant-time compare), frame (header, MAC, CRC),
messages (payload codecs), replay (anti-replay window), arq (record and downlink windows),
session (handshake + sealing/opening frames for one link).
"""

VERSION = 1
