"""The remote API (RAPI): Ganeti's REST API v2 and our extensions, over LUXI.

``routes`` is the one table of resources (path, methods, parameters, access,
body schema); the HTTP server, the OpenAPI document and doc/rapi.md are all
derived from it.  Resource handlers live in ``resources/``, one module per
area.  The daemon holds no state of its own: every answer comes from masterd.
"""
