"""Instances: Ganeti 3.0's ``/2/instances`` resources (all but create and export).

Shapes are rlib2's: the list is ``[{"id": name, "uri": ...}]`` sorted by name,
or with ``bulk=1`` one dict of :data:`I_FIELDS` per instance; one instance is
the same dict.  Changes submit one job and answer its id; the body of
shutdown, reboot and delete holds further fields of the opcode (as Ganeti's
``FillOpcode``): anything the opcode refuses is a 400 naming the field, and
no job is submitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ganeti import errors, opcodes
from ganeti.rapi import http, routes
from ganeti.rapi.fill import opcode_fields

# rlib2's I_FIELDS, in its order: what one instance looks like
I_FIELDS: tuple[str, ...] = (
    "name", "admin_state", "os", "pnode", "snodes", "disk_template",
    "nic.ips", "nic.macs", "nic.modes", "nic.uuids", "nic.names", "nic.links",
    "nic.networks", "nic.networks.names", "nic.bridges", "network_port",
    "disk.sizes", "disk.spindles", "disk_usage", "disk.uuids", "disk.names",
    "beparams", "hvparams", "oper_state", "oper_ram", "oper_vcpus", "status",
    "custom_hvparams", "custom_beparams", "custom_nicparams",
    "ctime", "mtime", "uuid", "serial_no", "tags",
)
# fields of Ganeti's shape that nothing here has (no VNC/console port, no spindles):
# always null, so that Ganeti's tools find every key they read
I_FIELDS_UNKNOWN: frozenset[str] = frozenset({"network_port", "disk.spindles"})

NO_REMEMBER = routes.Param("no_remember", bool, "Do not record the new admin state", False)

JOB_ID: dict[str, Any] = {"type": "integer", "description": "the id of the job submitted"}
_URI_LIST: dict[str, Any] = {"type": "array", "items": {
    "type": "object", "properties": {"id": {"type": "string"}, "uri": {"type": "string"}}}}
ITEMS: dict[str, Any] = {"oneOf": [_URI_LIST, {"type": "array", "items": {"type": "object"}}]}


def opcode_body(opcls: type[opcodes.OpCode], static: tuple[str, ...]) -> routes.Body:
    """An optional body of further ``opcls`` fields, documented by the opcode's schema
    (the fields the path and the query set left out); the opcode validates it."""
    schema = opcls.model_json_schema()
    hidden = {*static, "dry_run", "reason"}
    schema["properties"] = {k: v for k, v in schema.get("properties", {}).items()
                            if k not in hidden}
    schema["required"] = [k for k in schema.get("required", []) if k not in hidden]
    if not schema["required"]:
        del schema["required"]
    return routes.Body(schema, required=False,
                       description=f"Further fields of {opcls.OP_ID} (e.g. a timeout)")


def uri_list(names: Sequence[str], template: str) -> list[dict[str, str]]:
    """Ganeti's BuildUriList with ``("id", "uri")``: sorted by name."""
    return [{"id": name, "uri": template % name} for name in sorted(names)]


def mapped(fields: Sequence[str], known: Sequence[str], values: Sequence[Any]
           ) -> dict[str, Any]:
    """One item as a dict of ``fields``; those not in ``known`` are null."""
    by_name = dict(zip(known, values, strict=True))
    return {name: by_name.get(name) for name in fields}


def build_opcode(req: routes.Request, opcls: type[opcodes.OpCode],
                 static: Mapping[str, Any], use_body: bool = True) -> opcodes.OpCode:
    """Ganeti's FillOpcode: the body's fields, then ``static`` ones it may not override.

    Bad input raises OpPrereqError (the dispatcher's 400) naming the field.
    """
    fields = opcode_fields(req.body if use_body else None,
                           {**static, "reason": req.reason_trail()})
    return opcls.create(**fields)


def _with_memory(inst: dict[str, Any]) -> dict[str, Any]:
    """rlib2's _UpdateBeparams: ``beparams.memory`` repeats ``maxmem`` for old clients."""
    beparams = inst.get("beparams")
    if isinstance(beparams, dict) and "maxmem" in beparams:
        beparams["memory"] = beparams["maxmem"]
    return inst


_KNOWN = tuple(f for f in I_FIELDS if f not in I_FIELDS_UNKNOWN)


def _query(req: routes.Request, names: list[str], fields: tuple[str, ...]
           ) -> list[list[Any]]:
    with req.client() as cl:
        return cl.query_instances(names, list(fields), False)


@routes.route("/2/instances", "GET", access=routes.READ, params=(routes.BULK, routes.REASON),
              result="a list of {id, uri} (bulk: of instance dicts)", result_schema=ITEMS)
def list_instances(req: routes.Request) -> Any:
    """List the instances: their names and URIs, or with ``bulk=1`` every field.

    The bulk fields are Ganeti's (rlib2.I_FIELDS); ``network_port`` and
    ``disk.spindles`` are always null here (no console ports, no spindles), and
    ``beparams.memory`` repeats ``maxmem``.  The live fields (``oper_*``,
    ``status``) ask the primary nodes."""
    if not req.params["bulk"]:
        return uri_list([row[0] for row in _query(req, [], ("name",))], "/2/instances/%s")
    return [_with_memory(mapped(I_FIELDS, _KNOWN, row)) for row in _query(req, [], _KNOWN)]


@routes.route("/2/instances/{instance_name}", "GET", access=routes.READ,
              params=(routes.REASON,), result="the instance's fields (rlib2.I_FIELDS)",
              result_schema={"type": "object", "properties": {f: {} for f in I_FIELDS}})
def get_instance(req: routes.Request) -> Any:
    """One instance: the fields of the bulk list; 404 if there is no such instance.

    ``network_port`` and ``disk.spindles`` are always null here."""
    rows = _query(req, [req.args["instance_name"]], _KNOWN)
    if not rows:
        raise http.HttpNotFound(f"Instance '{req.args['instance_name']}' not known")
    return _with_memory(mapped(I_FIELDS, _KNOWN, rows[0]))


@routes.route("/2/instances/{instance_name}", "DELETE", access=routes.WRITE,
              params=(routes.DRY_RUN,), result="a job id",
              result_schema=JOB_ID,
              body=opcode_body(opcodes.OpInstanceRemove, ("instance_name", "ignore_failures")))
def delete_instance(req: routes.Request) -> Any:
    """Remove the instance and its disks (OP_INSTANCE_REMOVE; ``ignore_failures`` is
    always false, as in Ganeti)."""
    return req.submit(build_opcode(req, opcodes.OpInstanceRemove, {
        "instance_name": req.args["instance_name"], "ignore_failures": False,
        "dry_run": req.params["dry-run"]}))


@routes.route("/2/instances/{instance_name}/info", "GET", access=routes.READ,
              params=(routes.Param("static", bool, "Configuration only: do not ask the"
                                                   " nodes", False), routes.REASON),
              result="a job id (its result: OP_INSTANCE_QUERY_DATA's)", result_schema=JOB_ID)
def instance_info(req: routes.Request) -> Any:
    """Detailed information, as a job (OP_INSTANCE_QUERY_DATA) whose result holds it."""
    return req.submit(build_opcode(req, opcodes.OpInstanceQueryData, {
        "instances": [req.args["instance_name"]], "static": req.params["static"]},
        use_body=False))


@routes.route("/2/instances/{instance_name}/startup", "PUT", access=routes.WRITE,
              params=(routes.DRY_RUN, routes.Param("force", bool, "Start even if checks advise"
                                                           " against it", False),
                      NO_REMEMBER), result="a job id", result_schema=JOB_ID)
def startup_instance(req: routes.Request) -> Any:
    """Start the instance (OP_INSTANCE_STARTUP)."""
    return req.submit(build_opcode(req, opcodes.OpInstanceStartup, {
        "instance_name": req.args["instance_name"], "force": req.params["force"],
        "dry_run": req.params["dry-run"], "no_remember": req.params["no_remember"]},
        use_body=False))


@routes.route("/2/instances/{instance_name}/shutdown", "PUT", access=routes.WRITE,
              params=(routes.DRY_RUN, NO_REMEMBER), result="a job id",
              result_schema=JOB_ID,
              body=opcode_body(opcodes.OpInstanceShutdown, ("instance_name", "no_remember")))
def shutdown_instance(req: routes.Request) -> Any:
    """Stop the instance (OP_INSTANCE_SHUTDOWN)."""
    return req.submit(build_opcode(req, opcodes.OpInstanceShutdown, {
        "instance_name": req.args["instance_name"], "no_remember": req.params["no_remember"],
        "dry_run": req.params["dry-run"]}))


@routes.route("/2/instances/{instance_name}/reboot", "POST", access=routes.WRITE,
              params=(routes.DRY_RUN,
                      routes.Param("type", str, "hard, soft or full", "hard"),
                      routes.Param("ignore_secondaries", bool,
                                   "Ignore errors on the secondary nodes", False)),
              result="a job id", result_schema=JOB_ID,
              body=opcode_body(opcodes.OpInstanceReboot,
                               ("instance_name", "reboot_type", "ignore_secondaries")))
def reboot_instance(req: routes.Request) -> Any:
    """Reboot the instance (OP_INSTANCE_REBOOT); ``type`` defaults to hard."""
    try:
        op = build_opcode(req, opcodes.OpInstanceReboot, {
            "instance_name": req.args["instance_name"], "reboot_type": req.params["type"],
            "ignore_secondaries": req.params["ignore_secondaries"],
            "dry_run": req.params["dry-run"]})
    except errors.OpPrereqError as err:
        text = str(err.args[0])
        if "OP_INSTANCE_REBOOT.reboot_type'" in text:
            raise http.HttpBadRequest(f"Query parameter 'type': {text}") from None
        raise
    return req.submit(op)
