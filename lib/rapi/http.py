"""HTTP errors as Ganeti's RAPI sends them, and how our errors map onto them.

Ganeti's clients read an error body ``{"code": 404, "message": "Not Found",
"explain": "..."}``: ``message`` is the reason phrase, ``explain`` the detail.
"""

from __future__ import annotations

import http
import json
from typing import Any

from ganeti import errors

CONTENT_JSON = "application/json"


class HttpError(Exception):
    """An error answer; ``explain`` names the field or resource at fault."""

    code = 500

    def __init__(self, explain: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(explain)
        self.explain = explain
        self.headers = dict(headers or {})

    @property
    def message(self) -> str:
        return http.HTTPStatus(self.code).phrase

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "explain": self.explain}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


class HttpBadRequest(HttpError):
    code = 400


class HttpUnauthorized(HttpError):
    code = 401


class HttpForbidden(HttpError):
    code = 403


class HttpNotFound(HttpError):
    code = 404


class HttpMethodNotAllowed(HttpError):
    code = 405


class HttpConflict(HttpError):
    code = 409


class HttpLengthRequired(HttpError):
    code = 411


class HttpRequestEntityTooLarge(HttpError):
    code = 413


class HttpUnsupportedMediaType(HttpError):
    code = 415


class HttpInternalServerError(HttpError):
    code = 500


class HttpNotImplemented(HttpError):
    code = 501


class HttpBadGateway(HttpError):
    code = 502


class HttpServiceUnavailable(HttpError):
    code = 503


class HttpGatewayTimeout(HttpError):
    code = 504


_BY_ECODE: dict[str, type[HttpError]] = {
    errors.ECODE_NOENT: HttpNotFound,
    errors.ECODE_EXISTS: HttpConflict,
    errors.ECODE_NOTUNIQUE: HttpConflict,
    errors.ECODE_STATE: HttpConflict,
}


def from_ganeti_error(err: errors.GenericError) -> HttpError:
    """The HTTP answer for an error masterd (or our own validation) raised."""
    text = str(err.args[0]) if err.args else type(err).__name__
    if isinstance(err, errors.OpPrereqError):
        return _BY_ECODE.get(err.ecode, HttpBadRequest)(text)
    if isinstance(err, errors.NoMasterError):
        return HttpBadGateway(f"Master not available: {text}")
    if isinstance(err, errors.TimeoutError):
        return HttpGatewayTimeout(f"Timeout while talking to the master daemon: {text}")
    if isinstance(err, errors.ServerBusyError | errors.JobQueueFull):
        return HttpServiceUnavailable(text)
    if isinstance(err, errors.JobQueueDrainError):
        return HttpServiceUnavailable(f"The job queue is drained: {text}")
    if isinstance(err, errors.PermissionError):
        return HttpForbidden(text)
    if isinstance(err, errors.OpCodeUnknown | errors.QueryFilterParseError
                  | errors.ParameterError | errors.TypeEnforcementError | errors.TagError
                  | errors.RequestError):
        return HttpBadRequest(text)
    return HttpBadGateway(f"{type(err).__name__}: {text}")
