"""Implementations of the programs in tools/ (importable, so tests can drive them)."""
