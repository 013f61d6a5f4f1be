"""Exception hierarchy and its wire encoding.

Errors travel between the master, node daemons and clients as
``[class_name, args]``; :func:`decode` turns that back into the same class so
that a CLI sees exactly the error the logical unit raised.
"""

from __future__ import annotations

from typing import Any, NoReturn

# Error codes carried by OpPrereqError (values are the wire strings Ganeti uses)
ECODE_RESOLVER = "resolver_error"
ECODE_NORES = "insufficient_resources"
ECODE_TEMP_NORES = "temp_insufficient_resources"
ECODE_INVAL = "wrong_input"
ECODE_STATE = "wrong_state"
ECODE_NOENT = "unknown_entity"
ECODE_EXISTS = "already_exists"
ECODE_NOTUNIQUE = "resource_not_unique"
ECODE_FAULT = "internal_error"
ECODE_ENVIRON = "environment_error"
ECODE_ALL = frozenset({
    ECODE_RESOLVER, ECODE_NORES, ECODE_TEMP_NORES, ECODE_INVAL, ECODE_STATE,
    ECODE_NOENT, ECODE_EXISTS, ECODE_NOTUNIQUE, ECODE_FAULT, ECODE_ENVIRON,
})


class GenericError(Exception):
    """Base of every error this project raises on purpose."""


class ProgrammerError(GenericError):
    """An internal invariant was broken (a bug, not bad input)."""


class LockError(GenericError):
    """A lock operation was invalid (wrong order, not owned, deleted)."""


class LockTimeout(LockError):
    """A lock could not be acquired within the timeout."""


class LockDeletedError(LockError):
    """The lock was deleted while it was being waited for."""


class HypervisorError(GenericError):
    pass


class BlockDeviceError(GenericError):
    pass


class StorageError(GenericError):
    pass


class ConfigurationError(GenericError):
    """The cluster configuration is missing, corrupt or inconsistent."""


class ConfigVersionMismatch(ConfigurationError):
    """The configuration file was written by an incompatible version."""


class ReservationError(GenericError):
    pass


class RemoteError(GenericError):
    """A remote node answered with an error or could not be reached."""


class RpcFail(GenericError):
    """A node procedure failed in an expected way; the message goes back to the master.

    Raised by the node side (``ganeti.backend``) and by the helpers both sides
    share (``pathutils.to_wire_name``); the node daemon replies with its
    message alone.
    """


class ConfigSerialMismatch(RpcFail):
    """A candidate refused configuration records: they do not follow its serial.

    The master (``ganeti.config_distribution``) recognises the message and
    ships the whole file instead; ``node_serial`` is None when the node has no
    readable configuration.
    """

    PREFIX = "base serial mismatch"

    def __init__(self, node_serial: int | None, first_serial: int) -> None:
        has = "no readable configuration" if node_serial is None else str(node_serial)
        super().__init__(f"{self.PREFIX}: node has {has}, records start at {first_serial}")
        self.node_serial = node_serial
        self.first_serial = first_serial

    @classmethod
    def matches(cls, message: str | None) -> bool:
        """Whether an RPC failure message is this refusal."""
        return bool(message) and cls.PREFIX in (message or "")


class SignatureError(GenericError):
    """An HMAC or certificate signature did not verify."""


class X509CertError(GenericError):
    pass


class ParameterError(GenericError):
    pass


class ResultValidationError(GenericError):
    pass


class OpPrereqError(GenericError):
    """A precondition of an opcode failed; args are (message, error code)."""

    def __init__(self, msg: str, ecode: str = ECODE_INVAL, *extra: Any) -> None:
        super().__init__(msg, ecode, *extra)

    @property
    def ecode(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else ECODE_INVAL


class OpExecError(GenericError):
    """The execution of an opcode failed."""


class OpResultError(GenericError):
    """An opcode returned a result of the wrong type."""


class OpCodeUnknown(GenericError):
    pass


class HooksFailure(GenericError):
    """Hooks could not be run at all (not: a hook script failed)."""


class HooksAbort(HooksFailure):
    """A pre hook failed; args are (message, [(node, script, output), ...])."""


class CommandError(GenericError):
    pass


class TypeEnforcementError(GenericError):
    pass


class ParseError(GenericError):
    pass


class TagError(GenericError):
    pass


class FileStoragePathError(StorageError):
    """A file disk path outside the storage directory: a storage error like any other."""


class JobLost(GenericError):
    pass


class JobQueueError(GenericError):
    pass


class JobQueueDrainError(JobQueueError):
    """The queue is drained and refuses new jobs."""


class JobQueueFull(JobQueueError):
    """The queue has reached its hard size limit."""


class JobCanceled(GenericError):
    """The job was canceled while waiting."""


class LuxiError(GenericError):
    pass


class ProtocolError(LuxiError):
    """A message broke the LUXI framing or schema."""


class ConnectionClosedError(ProtocolError):
    pass


class TimeoutError(ProtocolError):
    pass


class RequestError(ProtocolError):
    pass


class NoMasterError(ProtocolError):
    """No master daemon answers on the socket."""


class PermissionError(LuxiError):
    pass


class ServerBusyError(LuxiError):
    """A server refused a connection or request at one of its limits; retry later."""


class QueryFilterParseError(ParseError):
    pass


class QuitGanetiException(Exception):
    """Used by daemons to ask their main loop to stop (not an error)."""


def field_ref(name: str) -> str:
    """How a message meant for users names an opcode field: ```name```.

    The one mechanism for "give this option": a RAPI or LUXI caller reads the field
    name it sends; the gnt-* commands show the command-line option that sets it
    instead (``cli.render_field_refs``), so no message spells both.
    """
    return f"`{name}`"


def encode(err: BaseException) -> list[Any]:
    """Encode an exception as ``[class_name, args]`` for the wire."""
    name = type(err).__name__ if isinstance(err, GenericError) else "GenericError"
    args = list(err.args) if isinstance(err, GenericError) else [f"{type(err).__name__}: {err}"]
    return [name, [_jsonable(a) for a in args]]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def get_error_class(name: str) -> type[GenericError] | None:
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, GenericError):
        return cls
    return None


def decode(data: Any) -> GenericError:
    """Rebuild the exception encoded by :func:`encode` (unknown names: GenericError)."""
    try:
        name, args = data
        if not isinstance(name, str) or not isinstance(args, (list, tuple)):
            raise ValueError
    except (TypeError, ValueError):
        return GenericError(f"Malformed error data: {data!r}")
    cls = get_error_class(name) or GenericError
    try:
        return cls(*args)
    except TypeError:
        return GenericError(name, *args)


def maybe_raise(data: Any) -> NoReturn:
    raise decode(data)


def format_error(err: BaseException) -> str:
    """One line for a human, as the CLI prints it."""
    if isinstance(err, OpPrereqError):
        return f"Failure: prerequisites not met for this operation: {err.args[0]} ({err.ecode})"
    if isinstance(err, OpExecError):
        return f"Failure: command execution error: {err.args[0] if err.args else ''}"
    if isinstance(err, HooksAbort):
        lines = [f"Failure: hooks failed: {err.args[0] if err.args else ''}"]
        for item in (err.args[1] if len(err.args) > 1 else []):
            node, script, output = ([*list(item), "", "", ""])[:3]
            lines.append(f"  node {node}, script {script}: {str(output).strip()}")
        return "\n".join(lines)
    if isinstance(err, JobQueueDrainError):
        return "Failure: the job queue is marked for drain and doesn't accept new requests"
    if isinstance(err, NoMasterError):
        return f"Cannot communicate with the master daemon: {err.args[0] if err.args else ''}"
    if isinstance(err, GenericError) and err.args:
        return f"{type(err).__name__}: {'; '.join(str(a) for a in err.args)}"
    return f"{type(err).__name__}: {err}"
