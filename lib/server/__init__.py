"""Daemon main programs (master daemon, node daemon)."""
