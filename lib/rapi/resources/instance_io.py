"""Instances in and out: creation (every mode, request version 1) and exports.

As in Ganeti 3.0 a body is the opcode's own fields, after Ganeti's renames
(``name``/``os`` for creation, ``destination`` for an export); the opcode
validates it (``opcodes.OpX.create``, which also takes Ganeti 3.0's fields
as :mod:`ganeti.opcodes_compat` says), so nothing is checked twice and a bad
body is a 400 naming the field before anything is submitted.  The body
schemas published here are derived from the same opcodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ganeti import opcodes
from ganeti.rapi import http, routes
from ganeti.rapi.fill import opcode_fields

REQ_DATA_VERSION = "__version__"
CREATE_RENAME = {"name": "instance_name", "os": "os_type"}
EXPORT_RENAME = {"destination": "target_node"}
MODE = routes.Param("mode", str, "Export mode to prepare for: local or remote")


def body_schema(cls: type[opcodes.OpCode], rename: Mapping[str, str],
                exclude: tuple[str, ...] = (), extra: Mapping[str, Any] | None = None,
                required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The opcode's JSON schema as a body: path fields out, Ganeti's older names in."""
    schema = cls.model_json_schema()
    props = {k: v for k, v in schema.get("properties", {}).items() if k not in exclude}
    for old, new in rename.items():
        if new in props:
            props[old] = {**props[new], "description":
                          f"Ganeti's older name of {new!r} (give one of the two)"}
    props.update(extra or {})
    out: dict[str, Any] = {"type": "object", "properties": props}
    needed = [*required, *(r for r in schema.get("required", ()) if r not in exclude)]
    if needed:
        out["required"] = needed
    if "$defs" in schema:
        out["$defs"] = schema["$defs"]
    return out


# --- /2/instances POST ---------------------------------------------------------------

_CREATE_SCHEMA = body_schema(
    opcodes.OpInstanceCreate, CREATE_RENAME, exclude=("dry_run", "reason"),
    extra={REQ_DATA_VERSION: {"const": 1, "description": "Request data version: must be"
                              " 1 (version 0, Ganeti 2.0's format, is refused as by"
                              " Ganeti 3.0)"}},
    required=(REQ_DATA_VERSION,))


def create_opcode(body: Any, dry_run: bool, reason: list[tuple[str, str, int]]
                  ) -> opcodes.OpCode:
    """OpInstanceCreate from a request version 1 body; HttpBadRequest/OpPrereqError
    (a 400) name the field at fault."""
    if not isinstance(body, dict):
        raise http.HttpBadRequest(f"body: must be a JSON object, not"
                                  f" {type(body).__name__}")
    version = body.get(REQ_DATA_VERSION, 0)
    if version == 0 and not isinstance(version, bool):
        raise http.HttpBadRequest(
            f"body.{REQ_DATA_VERSION}: instance creation request version 0 is no longer"
            f" supported; send version 1 ({REQ_DATA_VERSION}: 1, the opcode's fields)")
    if version != 1 or isinstance(version, bool):
        raise http.HttpBadRequest(f"body.{REQ_DATA_VERSION}: unsupported request data"
                                  f" version {version!r} (1 is supported)")
    data = {k: v for k, v in body.items() if k != REQ_DATA_VERSION}
    fields = opcode_fields(data, {"dry_run": dry_run, "reason": reason}, CREATE_RENAME)
    return opcodes.OpInstanceCreate.create(**fields)


@routes.route("/2/instances", "POST", access=routes.WRITE, result="a job id",
              params=(routes.DRY_RUN,), body=routes.Body(_CREATE_SCHEMA))
def create_instance(req: routes.Request) -> Any:
    """Create an instance, or import one (from an export here, or from another cluster).

    The body is request version 1 (``"__version__": 1``): OpInstanceCreate's fields,
    ``name`` and ``os`` accepted for ``instance_name`` and ``os_type``. ``mode``
    chooses create, import (``src_node``, ``src_path``) or remote-import
    (``source_handshake``, ``source_x509_ca``, ``source_instance_name``, from the
    source cluster's prepare-export). Ganeti 3.0's fields this cluster lacks are
    accepted at 3.0's defaults only. Version 0 bodies are refused, as by Ganeti 3.0.
    The job's result is the list of the new instance's nodes."""
    op = create_opcode(req.body, bool(req.params["dry-run"]), req.reason_trail())
    return req.submit(op)


# --- /2/instances/{instance_name}/prepare-export PUT -----------------------------------


@routes.route("/2/instances/{instance_name}/prepare-export", "PUT", access=routes.WRITE,
              result="a job id", params=(MODE,),
              body=routes.Body({"type": "object", "maxProperties": 0}, required=False,
                               description="None, or {} (Ganeti's tests send one)"))
def prepare_export(req: routes.Request) -> Any:
    """Prepare an export of the instance (OpBackupPrepare).

    In remote mode the job's result is what the destination cluster needs: the
    signed handshake, the signed name of the source's transfer key and its signed
    X509 certificate (doc/remote-export.md); in local mode it is null."""
    if req.body not in (None, {}):
        raise http.HttpBadRequest("body: prepare-export takes only the mode (query"
                                  " parameter); the body must be empty or {}")
    op = opcodes.OpBackupPrepare.create(
        instance_name=req.args["instance_name"], mode=req.params["mode"],
        reason=req.reason_trail())
    return req.submit(op)


# --- /2/instances/{instance_name}/export PUT -------------------------------------------

_EXPORT_SCHEMA = body_schema(opcodes.OpBackupExport, EXPORT_RENAME,
                             exclude=("instance_name", "reason"))
# Ganeti names the target "destination"; either name does
_EXPORT_SCHEMA["required"] = [r for r in _EXPORT_SCHEMA.get("required", ())
                              if r != "target_node"]


def export_opcode(instance_name: str, body: Any, reason: list[tuple[str, str, int]]
                  ) -> opcodes.OpCode:
    fields = opcode_fields(body, {"instance_name": instance_name, "reason": reason},
                           EXPORT_RENAME)
    return opcodes.OpBackupExport.create(**fields)


@routes.route("/2/instances/{instance_name}/export", "PUT", access=routes.WRITE,
              result="a job id", body=routes.Body(_EXPORT_SCHEMA))
def export_instance(req: routes.Request) -> Any:
    """Export the instance (OpBackupExport), to a node here or to another cluster.

    The body is OpBackupExport's fields, ``destination`` accepted for
    ``target_node`` (Ganeti's name): local mode names the node, remote mode gives
    the destination's per-disk endpoints with ``x509_key_name`` and
    ``destination_x509_ca``. This cluster's own export fields (``keep_generations``,
    ``compress``, ``bwlimit``, ``ionice_class``, ``note``, ``full``, ...) are
    accepted too. The job's result is ``[finalize ok, [per-disk ok]]``."""
    op = export_opcode(req.args["instance_name"], req.body, req.reason_trail())
    return req.submit(op)
