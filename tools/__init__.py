"""Technician tools (build, provision, flash) and the `hcp` command-line entry point."""
