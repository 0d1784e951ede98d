"""Upstream profiles, one module per province interface (see registry.py for the list)."""
