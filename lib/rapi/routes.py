"""The RAPI route table: every resource defined once, by its handler's decorator.

A handler is a function of one :class:`Request`; :func:`route` records its
path, method, access, query parameters and body schema in :data:`TABLE`.
:func:`dispatch` is the whole request pipeline short of HTTP itself
(authentication result in, :class:`Response` out), so every server, the
OpenAPI document and doc/rapi.md share one table, and handlers can be tested
without a socket.

Order of checks, so an anonymous caller learns nothing: authentication
(401), resource (404), method (405), permission (403), the body's media
type (415), query parameters, body (400); only then does the handler run.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ValidationError

from ganeti import errors, opcodes
from ganeti.rapi import http

if TYPE_CHECKING:
    from ganeti import luxi

logger = logging.getLogger(__name__)

READ = "read"
WRITE = "write"
METHODS = ("GET", "PUT", "POST", "DELETE")
REALM = "Ganeti Remote API"
AUTHENTICATE = {"WWW-Authenticate": f'Basic realm="{REALM}"'}

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no", ""})
_VAR = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class User:
    """An authenticated user; ``write`` and ``read`` are the users file's options."""

    name: str
    read: bool = True
    write: bool = False


@dataclass(frozen=True)
class Param:
    """A query-string parameter: ``kind`` is bool (0/1), int, str or list (repeatable)."""

    name: str
    kind: type
    description: str
    default: Any = None

    def parse(self, values: list[str]) -> Any:
        if self.kind is list:
            return list(values)
        if len(values) != 1:
            raise http.HttpBadRequest(f"Query parameter '{self.name}' given more than once")
        value = values[0]
        if self.kind is bool:
            low = value.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise http.HttpBadRequest(
                f"Query parameter '{self.name}' must be 0 or 1, not {value!r:.40}")
        if self.kind is int:
            try:
                return int(value)
            except ValueError:
                raise http.HttpBadRequest(
                    f"Query parameter '{self.name}' must be an integer, not {value!r:.40}"
                ) from None
        return value


REASON = Param("reason", str, "Why the change is made, recorded in the job's reason trail")
DRY_RUN = Param("dry-run", bool, "Only check the prerequisites; change nothing", False)
BULK = Param("bulk", bool, "Every field of every item instead of names and URIs", False)
# reason trail sources, as Ganeti's (constants.OPCODE_REASON_SRC_*)
REASON_SRC_USER = "gnt:user"
REASON_SRC_RLIB2 = "gnt:library:rlib2"


@dataclass(frozen=True)
class Body:
    """A JSON body: a model is validated (unknown fields refused) into ``Request.data``;
    a dict is only the JSON schema (the handler validates, e.g. through an opcode)."""

    schema: type[BaseModel] | Mapping[str, Any]
    required: bool = True
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        if isinstance(self.schema, type):
            return self.schema.model_json_schema()
        return dict(self.schema)


@dataclass(frozen=True)
class Response:
    """A handler's answer when it is not a JSON document with status 200."""

    body: bytes = b""
    status: int = 200
    content_type: str = http.CONTENT_JSON
    headers: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """What handlers may use: the daemon's connection to masterd, nothing else."""

    def client(self) -> luxi.Client:
        """A new LUXI client to the master daemon (use it as a context manager)."""
        ...


@dataclass
class Request:
    method: str
    path: str
    args: dict[str, str]          # the path's {variables}, URL-decoded
    params: dict[str, Any]        # query parameters, typed, defaults filled in
    body: Any                     # the parsed JSON body (None: no body)
    data: BaseModel | None        # the body validated by the operation's model
    user: User
    backend: Backend
    headers: Mapping[str, str] = field(default_factory=dict)
    handler_name: str = ""        # the handler function's name (in reason trails)

    def client(self) -> luxi.Client:
        return self.backend.client()

    def submit(self, op: opcodes.OpCode) -> int:
        """Submit a one-opcode job; its id (an integer, as Ganeti's client expects)."""
        with self.client() as cl:
            return cl.submit_job([op])

    def reason_trail(self) -> list[tuple[str, str, int]]:
        """Ganeti's reason trail for an opcode of this request: the user's ``reason``
        (if given), then ``gnt:library:rlib2:<handler>``."""
        now = time.time_ns()
        trail = []
        if self.params.get(REASON.name):
            trail.append((REASON_SRC_USER, str(self.params[REASON.name]), now))
        trail.append((f"{REASON_SRC_RLIB2}:{self.handler_name}", "", now))
        return trail


Handler = Callable[[Request], Any]


@dataclass(frozen=True)
class Operation:
    method: str
    handler: Handler
    access: str
    params: tuple[Param, ...]
    body: Body | None
    result: str                    # what a successful answer holds
    extension: bool                # not in Ganeti's RAPI
    result_schema: Mapping[str, Any] | None = None
    result_type: str = http.CONTENT_JSON  # the media type of a successful answer

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.handler) or "").split("\n\n", 1)[0].replace("\n", " ")

    @property
    def description(self) -> str:
        parts = (inspect.getdoc(self.handler) or "").split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""


@dataclass
class Route:
    template: str                  # "/2/instances/{instance_name}/startup"
    regex: re.Pattern[str]
    variables: tuple[str, ...]
    operations: dict[str, Operation] = field(default_factory=dict)

    @property
    def extension(self) -> bool:
        return all(op.extension for op in self.operations.values())


TABLE: dict[str, Route] = {}


def _compile(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    if not template.startswith("/") or (template != "/" and template.endswith("/")):
        raise errors.ProgrammerError(f"Bad route template {template!r}")
    variables = tuple(_VAR.findall(template))
    pattern = "".join(
        f"(?P<{part[1:-1]}>[^/]+)" if _VAR.fullmatch(part) else re.escape(part)
        for part in re.split(r"(\{[a-z_]+\})", template))
    return re.compile(pattern + r"\Z"), variables


def route(template: str, method: str, *, access: str, result: str,
          params: tuple[Param, ...] = (), body: Body | None = None, extension: bool = False,
          result_schema: Mapping[str, Any] | None = None,
          result_type: str = http.CONTENT_JSON) -> Callable[[Handler], Handler]:
    """Register the decorated handler as ``method template``; the docstring documents it."""
    if method not in METHODS or access not in (READ, WRITE):
        raise errors.ProgrammerError(f"Bad route {method} {template} ({access})")
    if access == WRITE and all(p.name != REASON.name for p in params):
        params = (*params, REASON)

    def register(handler: Handler) -> Handler:
        # every check first: a refused handler leaves no trace in the table
        if not inspect.getdoc(handler):
            raise errors.ProgrammerError(f"{method} {template}: the handler has no docstring")
        entry = TABLE.get(template)
        if entry is None:
            regex, variables = _compile(template)
            entry = Route(template, regex, variables)
        if method in entry.operations:
            raise errors.ProgrammerError(f"{method} {template} is defined twice")
        TABLE.setdefault(template, entry)
        entry.operations[method] = Operation(method, handler, access, params, body, result,
                                             extension, result_schema, result_type)
        return handler
    return register


def find(path: str) -> tuple[Route, dict[str, str]] | None:
    """The route a (still URL-encoded) path names, and its decoded variables.

    A literal segment wins over a variable (``/2/x/special`` over ``/2/x/{name}``),
    whatever order the modules registered them in."""
    best: tuple[Route, re.Match[str]] | None = None
    for entry in TABLE.values():
        match = entry.regex.match(path)
        if match and (best is None or len(entry.variables) < len(best[0].variables)):
            best = entry, match
    if best is None:
        return None
    entry, match = best
    return entry, {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}


def _parse_params(op: Operation, query: str) -> dict[str, Any]:
    try:
        given = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False,
                                      max_num_fields=1000)
    except ValueError as err:
        raise http.HttpBadRequest(f"Query string: {err}") from None
    known = {p.name: p for p in op.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise http.HttpBadRequest(
            f"Unknown query parameter(s) {', '.join(map(repr, unknown))} (accepted: {accepted})")
    return {p.name: p.parse(given[p.name]) if p.name in given else p.default
            for p in op.params}


def _parse_body(op: Operation, method: str, path: str, raw: bytes
                ) -> tuple[Any, BaseModel | None]:
    if not raw.strip():
        if op.body is not None and op.body.required:
            raise http.HttpBadRequest(f"body: {method} {path} needs a JSON body")
        return None, None
    if op.body is None:
        raise http.HttpBadRequest(f"body: {method} {path} takes no body")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise http.HttpBadRequest(f"body: not valid JSON: {err}") from None
    if body is None and not op.body.required:
        return None, None
    if isinstance(op.body.schema, type):
        try:
            return body, op.body.schema.model_validate(body)
        except ValidationError as err:
            raise http.HttpBadRequest(opcodes.validation_message("body", err)) from None
    return body, None


def _json(result: Any) -> Response:
    return Response(json.dumps(result).encode())


def dispatch(backend: Backend, method: str, path: str, query: str, body: bytes,
             user: User | None, headers: Mapping[str, str] | None = None,
             content_type: str | None = None) -> Response:
    """Answer one request; ``user`` is None when authentication failed or was absent.

    ``content_type`` (the HTTP server passes it; None skips the check): a
    body must be ``application/json``, as Ganeti requires (415 otherwise)."""
    try:
        if user is None:
            raise http.HttpUnauthorized("Authentication is required", AUTHENTICATE)
        found = find(path)
        if found is None:
            raise http.HttpNotFound(f"No resource {path!r:.200}")
        entry, args = found
        op = entry.operations.get(method)
        if op is None:
            raise http.HttpMethodNotAllowed(
                f"{method} is not allowed on {entry.template}",
                {"Allow": ", ".join(sorted(entry.operations))})
        if not (user.write if op.access == WRITE else user.read):
            raise http.HttpForbidden(f"User {user.name!r} may not {op.access} ({method} {path})")
        if content_type is not None and body.strip() \
                and content_type.split(";", 1)[0].strip().lower() != http.CONTENT_JSON:
            raise http.HttpUnsupportedMediaType(
                f"A body must be {http.CONTENT_JSON}, not {content_type!r:.60}")
        params = _parse_params(op, query)
        parsed, data = _parse_body(op, method, path, body)
        req = Request(method, path, args, params, parsed, data, user, backend,
                      dict(headers or {}), op.handler.__name__)
        result = op.handler(req)
        return result if isinstance(result, Response) else _json(result)
    except http.HttpError as err:
        return Response(err.body_bytes(), err.code, headers=err.headers)
    except errors.GenericError as err:
        answer = http.from_ganeti_error(err)
        return Response(answer.body_bytes(), answer.code, headers=answer.headers)
    except Exception:
        logger.exception("Error answering %s %s", method, path)
        answer = http.HttpInternalServerError("Internal error; see the RAPI daemon's log")
        return Response(answer.body_bytes(), answer.code)
