"""Firmware version (major, minor, patch), sent in HELLO."""
FW_VERSION = (0, 1, 0)
