"""Every resource the master answers ``Query``/``QueryFields`` for, registered here.

The composition root (:mod:`ganeti.server.masterd`) calls :func:`register_all`
once at start-up; nothing is registered as a side effect of an import.  The
row builders live in one module per resource and are shared with the query
LUs (OpInstanceQuery, OpNodeQuery), which import them from here.
"""

from __future__ import annotations

from ganeti.query_resources import export, group, instance, job, network, node, transfer

# each module's register() makes its resource(s) queryable
MODULES = (job, node, group, network, instance, export, transfer)


def register_all() -> None:
    """Make every resource of MODULES queryable (again: replaces them)."""
    for module in MODULES:
        module.register()
