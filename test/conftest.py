"""Shared pytest setup: the reflink test filesystem fixtures (test/support/fsfixture.py)."""

pytest_plugins = ["support.fsfixture"]
