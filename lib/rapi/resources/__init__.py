"""Every RAPI resource module; importing one registers its routes in ``routes.TABLE``.

One module per area.  :func:`load_all` is what the daemon, the OpenAPI
generator and the docs call, so they all see the same table.
"""

from __future__ import annotations

import importlib

from ganeti.rapi import routes

# the areas, in the order doc/rapi.md lists them
MODULES: tuple[str, ...] = (
    "general",
    "instances",
    "instance_io",
    "nodes",
    "tags",
    "jobs",
    "query",
    "backup",
    "metrics",
)


def load_all() -> dict[str, routes.Route]:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return routes.TABLE
