"""Shared pytest setup: the reflink test filesystem fixtures (test/support/fsfixture.py).

A suite started in the background of a non-interactive shell (``tools/run-tests &``,
nohup, some CI runners) inherits SIGINT ignored, and every process it starts would
ignore it too (an ignored signal stays ignored across exec): the tests that press
Ctrl-C on a gnt-* command or on tools/demo would then see it run on.  The suite
gives SIGINT back its usual meaning, so its children start with the default.
"""

import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["support.fsfixture"]
