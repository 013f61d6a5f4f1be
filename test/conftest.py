"""Shared pytest setup: the reflink test filesystem fixtures (test/fsfixture.py)."""

pytest_plugins = ["fsfixture"]
