"""Tags of the cluster, an instance and a node: Ganeti 3.0's ``.../tags`` resources.

GET answers the sorted tags (LUXI's QueryTags: 404 for an unknown object);
PUT adds and DELETE removes the tags given as repeated ``tag`` query
parameters, each as one job (OP_TAGS_SET, OP_TAGS_DEL).  Ganeti's client also
sends the tags as the body of some PUTs; as in Ganeti, only the query counts.
A tag Ganeti's rules refuse (1..128 characters of letters, digits and
``.+*/:@-``) is a 400 naming the ``tag`` parameter, and nothing is submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ganeti import constants, errors, opcodes
from ganeti.rapi import http, routes
from ganeti.rapi.resources.instances import JOB_ID, build_opcode

TAG = routes.Param("tag", list, "A tag (repeat the parameter for several)", None)
_IGNORED_BODY = routes.Body(
    {"type": "array", "items": {"type": "string"}}, required=False,
    description="Ignored: Ganeti's client sends the tags here too, but only the"
                " query's tag parameters count")

# path -> (kind, the path variable naming the object, Ganeti's operation name)
_RESOURCES: tuple[tuple[str, str, str | None, str], ...] = (
    ("/2/tags", constants.TAG_CLUSTER, None, "tags"),
    ("/2/instances/{instance_name}/tags", constants.TAG_INSTANCE, "instance_name",
     "instances_name_tags"),
    ("/2/nodes/{node_name}/tags", constants.TAG_NODE, "node_name", "nodes_name_tags"),
)


def _owner(req: routes.Request, variable: str | None) -> str | None:
    return None if variable is None else req.args[variable]


def _change(req: routes.Request, opcls: type[opcodes.OpCode], kind: str,
            variable: str | None) -> int:
    try:
        op = build_opcode(req, opcls, {
            "kind": kind, "name": _owner(req, variable), "tags": req.params["tag"] or [],
            "dry_run": req.params["dry-run"]}, use_body=False)
    except errors.OpPrereqError as err:
        raise http.HttpBadRequest(f"Query parameter 'tag': {err.args[0]}") from None
    return req.submit(op)


def _register(path: str, kind: str, variable: str | None, operation: str) -> None:
    what = "the cluster" if variable is None else f"the {kind}"

    def get_tags(req: routes.Request) -> Any:
        with req.client() as cl:
            return cl.query_tags(kind, _owner(req, variable))

    def add_tags(req: routes.Request) -> Any:
        return _change(req, opcodes.OpTagsSet, kind, variable)

    def remove_tags(req: routes.Request) -> Any:
        return _change(req, opcodes.OpTagsDel, kind, variable)

    get_tags.__doc__ = f"The tags of {what}, sorted" + (
        "" if variable is None else f"; 404 if there is no such {kind}") + "."
    add_tags.__doc__ = f"Add the ``tag`` parameters' tags to {what} (OP_TAGS_SET)."
    remove_tags.__doc__ = (f"Remove the ``tag`` parameters' tags from {what} (OP_TAGS_DEL);"
                           " the job fails if one is not there.")
    handlers: tuple[tuple[str, str, Callable[[routes.Request], Any]], ...] = (
        ("GET", routes.READ, get_tags), ("PUT", routes.WRITE, add_tags),
        ("DELETE", routes.WRITE, remove_tags))
    for method, access, handler in handlers:
        # the reason trail names Ganeti's operation (gnt:library:rlib2:nodes_name_tags)
        handler.__name__ = handler.__qualname__ = operation
        if method == "GET":
            routes.route(path, method, access=access, params=(routes.REASON,),
                         result="a list of tags", result_schema={
                             "type": "array", "items": {"type": "string"}})(handler)
        else:
            routes.route(path, method, access=access, params=(TAG, routes.DRY_RUN),
                         body=_IGNORED_BODY, result="a job id",
                         result_schema=JOB_ID)(handler)


for _path, _kind, _variable, _operation in _RESOURCES:
    _register(_path, _kind, _variable, _operation)
