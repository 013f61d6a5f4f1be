"""Nodes: Ganeti 3.0's ``/2/nodes`` and ``/2/nodes/{node_name}`` (reads only).

The list is ``[{"id": name, "uri": ...}]`` sorted by name, or with ``bulk=1``
one dict of :data:`N_FIELDS` per node; one node is the same dict plus
``secondary_ip`` (rlib2's alias of ``sip``).  The memory, disk and CPU
figures are asked from the nodes (null when a node is offline or silent).
"""

from __future__ import annotations

from typing import Any

from ganeti.rapi import http, routes
from ganeti.rapi.resources.instances import ITEMS, mapped, uri_list

# rlib2's N_FIELDS, in its order
N_FIELDS: tuple[str, ...] = (
    "name", "offline", "master_candidate", "drained",
    "dtotal", "dfree", "sptotal", "spfree",
    "mtotal", "mnode", "mfree",
    "pinst_cnt", "sinst_cnt",
    "ctotal", "cnos", "cnodes", "csockets",
    "pip", "sip", "role",
    "pinst_list", "sinst_list",
    "master_capable", "vm_capable",
    "ndparams",
    "group.uuid",
    "ctime", "mtime", "uuid", "serial_no", "tags",
)
# no spindles and no CPU topology (cores, NUMA nodes, sockets) here: always null
N_FIELDS_UNKNOWN: frozenset[str] = frozenset({"sptotal", "spfree", "cnos", "cnodes",
                                              "csockets"})
_KNOWN = tuple(f for f in N_FIELDS if f not in N_FIELDS_UNKNOWN)


def _query(req: routes.Request, names: list[str], fields: tuple[str, ...]
           ) -> list[list[Any]]:
    with req.client() as cl:
        return cl.query_nodes(names, list(fields), False)


@routes.route("/2/nodes", "GET", access=routes.READ, params=(routes.BULK, routes.REASON),
              result="a list of {id, uri} (bulk: of node dicts)", result_schema=ITEMS)
def list_nodes(req: routes.Request) -> Any:
    """List the nodes: their names and URIs, or with ``bulk=1`` every field.

    The bulk fields are Ganeti's (rlib2.N_FIELDS); ``sptotal``, ``spfree``,
    ``cnos``, ``cnodes`` and ``csockets`` are always null here."""
    if not req.params["bulk"]:
        return uri_list([row[0] for row in _query(req, [], ("name",))], "/2/nodes/%s")
    return [mapped(N_FIELDS, _KNOWN, row) for row in _query(req, [], _KNOWN)]


@routes.route("/2/nodes/{node_name}", "GET", access=routes.READ, params=(routes.REASON,),
              result="the node's fields (rlib2.N_FIELDS and secondary_ip)",
              result_schema={"type": "object", "properties": {
                  f: {} for f in (*N_FIELDS, "secondary_ip")}})
def get_node(req: routes.Request) -> Any:
    """One node: the fields of the bulk list and ``secondary_ip``; 404 if there is no
    such node.

    ``sptotal``, ``spfree``, ``cnos``, ``cnodes`` and ``csockets`` are always null."""
    rows = _query(req, [req.args["node_name"]], _KNOWN)
    if not rows:
        raise http.HttpNotFound(f"Node '{req.args['node_name']}' not known")
    node = mapped(N_FIELDS, _KNOWN, rows[0])
    node["secondary_ip"] = node["sip"]
    return node
