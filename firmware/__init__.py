"""Evaluator firmware (MicroPython)."""
