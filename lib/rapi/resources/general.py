"""The resources every client asks first: the API version, cluster info, features."""

from __future__ import annotations

from typing import Any

from ganeti import constants, opcodes
from ganeti.rapi import http, openapi, routes

# Ganeti's optional features this server really implements (client.GetFeatures)
INSTANCE_CREATE_REQV1 = "instance-create-reqv1"
FEATURES: tuple[str, ...] = (INSTANCE_CREATE_REQV1,)
# keys /2/info repeats under another name, as Ganeti's R_2_info.GET_ALIASES
INFO_ALIASES = {"volume_group_name": "vg_name", "drbd_usermode_helper": "drbd_helper"}


@routes.route("/", "GET", access=routes.READ, result="null",
              result_schema={"type": "null"})
def root(req: routes.Request) -> Any:
    """Nothing: kept because Ganeti answers it, for old clients."""
    return None


@routes.route("/2", "GET", access=routes.READ, result="null",
              result_schema={"type": "null"})
def version_2(req: routes.Request) -> Any:
    """Nothing: the root of version 2, answered as Ganeti does."""
    return None


@routes.route("/version", "GET", access=routes.READ, result="the RAPI version, 2",
              result_schema={"type": "integer", "const": constants.RAPI_VERSION})
def version(req: routes.Request) -> Any:
    """The remote API's version, for clients to adapt to.

    This is the protocol version (2), not the software's release; that is
    ``software_version`` in ``/2/info``."""
    return constants.RAPI_VERSION


@routes.route("/2/info", "GET", access=routes.READ,
              result="the cluster's configuration (QueryClusterInfo)",
              result_schema={"type": "object"})
def info(req: routes.Request) -> Any:
    """Cluster information: name, master, versions, enabled hypervisors, parameters.

    The answer of LUXI's QueryClusterInfo, with Ganeti 3.0's keys, and the
    aliases Ganeti's RAPI adds (``vg_name``, ``drbd_helper``)."""
    with req.client() as cl:
        data = cl.query_cluster_info()
    for key, alias in INFO_ALIASES.items():
        if key in data:
            data.setdefault(alias, data[key])
    return data


@routes.route("/2/features", "GET", access=routes.READ,
              result="the optional features implemented",
              result_schema={"type": "array", "items": {"type": "string"}})
def features(req: routes.Request) -> Any:
    """The optional RAPI features this server implements (``instance-create-reqv1``).

    Only features really implemented are listed, so Ganeti's client falls
    back to older request forms for the others."""
    return list(FEATURES)


# what a body may not set, as in Ganeti: the daemon builds the reason trail
_NOT_IN_BODY = frozenset({"reason"})


@routes.route("/2/modify", "PUT", access=routes.WRITE, result="a job id",
              params=(routes.DRY_RUN,),
              body=routes.Body(opcodes.OpClusterSetParams.model_json_schema(),
                               required=False,
                               description="the cluster settings to change, as the"
                                           " opcode's fields (OP_CLUSTER_SET_PARAMS)"),
              result_schema={"type": "integer"})
def modify(req: routes.Request) -> Any:
    """Change cluster settings (``gnt-cluster modify``), in a job.

    The body holds the fields of OP_CLUSTER_SET_PARAMS (``dry_run`` and
    ``depends`` included, as Ganeti's client sends them); the opcode
    validates them, so an unknown field or a wrong type is a 400 naming it."""
    body = {} if req.body is None else req.body
    if not isinstance(body, dict):
        raise http.HttpBadRequest("body: must be a JSON object of the opcode's fields")
    fixed = sorted(_NOT_IN_BODY & set(body))
    if fixed:
        raise http.HttpBadRequest(f"body.{fixed[0]}: not allowed in the body (use the"
                                  " query parameter)")
    fields = {**body, "reason": req.reason_trail()}
    if req.params["dry-run"]:
        fields["dry_run"] = True
    return req.submit(opcodes.OpClusterSetParams.create(**fields))


@routes.route("/openapi.json", "GET", access=routes.READ,
              result="the OpenAPI 3.1 document of every resource",
              result_schema={"type": "object"}, extension=True)
def openapi_document(req: routes.Request) -> Any:
    """This API described as OpenAPI 3.1, generated from the route table."""
    return openapi.build()
