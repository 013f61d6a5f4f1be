"""The LUXI method table: every method defined once, by its MasterBackend signature.

A method is a :class:`MasterBackend` method marked with :func:`luxi_method`.
Its annotated parameters are the wire arguments (positional, in order); each
annotation carries the argument's description (``Field(description=...)``),
and one strict pydantic ``TypeAdapter`` per argument, built once at import,
checks it.  From this one table come the server's argument validation, the
client agreement test (``ganeti.luxi.Client``) and the method reference in
doc/luxi.md (``python -m ganeti.server.luxi_methods``).  Importing it starts
nothing, so other front ends (RAPI) can reuse it.
"""

from __future__ import annotations

import inspect
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ganeti import constants, errors, limits, luxi, opcodes, query

# --- argument types: the annotation says what is accepted and how to describe it ---

_JOB_SECONDS = f"seconds in {limits.JOB_AGE.minimum}..{limits.JOB_AGE.maximum}"

JobId = Annotated[int, Field(description="a job id (integer)")]
FieldNames = Annotated[list[str], Field(description="a list of field names")]
OpList = Annotated[list[dict[str, Any]], Field(
    min_length=1, description="a non-empty list of opcode dicts")]
JobList = Annotated[list[Annotated[list[dict[str, Any]], Field(min_length=1)]], Field(
    description="a list of opcode lists")]
PrevJobInfo = Annotated[list[Any] | None, Field(description="a list or null")]
LogSerial = Annotated[int | None, Field(description="an integer or null")]
Seconds = Annotated[float, Field(allow_inf_nan=False, description="a number of seconds")]
JobAge = Annotated[float, Field(
    allow_inf_nan=False, ge=limits.JOB_AGE.minimum, le=limits.JOB_AGE.maximum,
    description=f"an age in {_JOB_SECONDS} (-1: all)")]
JobTimeout = Annotated[float, Field(
    allow_inf_nan=False, ge=limits.JOB_AGE.minimum, le=limits.JOB_AGE.maximum,
    description=f"a timeout in {_JOB_SECONDS}")]
Priority = Annotated[int, Field(description="an integer priority")]
JobIds = Annotated[list[int] | None, Field(description="a list of job ids or null")]
ResourceName = Annotated[str, Field(description="a resource name")]
QueryFilter = Annotated[list[Any] | None, Field(description="a filter list or null")]
OptFieldNames = Annotated[list[str] | None, Field(
    description="a list of field names or null")]
NodeNames = Annotated[list[str], Field(description="a list of node names")]
Flag = Annotated[bool, Field(description="a boolean")]

# strict: JSON has no int/bool/str confusion to paper over (true is not 1)
_STRICT = ConfigDict(strict=True)


@dataclass(frozen=True)
class Arg:
    """One positional wire argument."""

    name: str
    adapter: TypeAdapter[Any]
    description: str

    @classmethod
    def from_annotation(cls, name: str, annotation: Any) -> Arg:
        infos = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, FieldInfo)]
        description = next((i.description for i in infos if i.description), None)
        if description is None:
            raise errors.ProgrammerError(f"LUXI argument '{name}' has no description")
        return cls(name, TypeAdapter(annotation, config=_STRICT), description)


@dataclass(frozen=True)
class Method:
    """A handler and its argument checks, as the server dispatches it."""

    handler: Callable[..., Any]
    args: tuple[Arg, ...]


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table: wire name, backend method, client method, arguments."""

    name: str
    attr: str
    client_attr: str
    args: tuple[Arg, ...]
    returns: str
    doc: str

    @property
    def idempotent(self) -> bool:
        return self.name in luxi.IDEMPOTENT_METHODS


_F = TypeVar("_F", bound=Callable[..., Any])


def luxi_method(name: str, client: str | None = None) -> Callable[[_F], _F]:
    """Mark a MasterBackend method as the LUXI method ``name`` (client method: ``client``)."""
    def mark(func: _F) -> _F:
        func.__luxi__ = (name, client or func.__name__)  # type: ignore[attr-defined]
        return func
    return mark


def validate_args(name: str, method: Method, args: list[Any]) -> list[Any]:
    """The arguments as the handler gets them; OpPrereqError naming the bad one."""
    if len(args) != len(method.args):
        raise errors.OpPrereqError(
            f"{name} takes {len(method.args)} argument(s), got {len(args)}", errors.ECODE_INVAL)
    checked = []
    for value, spec in zip(args, method.args, strict=True):
        try:
            checked.append(spec.adapter.validate_python(value))
        except ValidationError:
            raise errors.OpPrereqError(
                f"{name}: argument '{spec.name}' must be {spec.description},"
                f" got {value!r:.80}", errors.ECODE_INVAL) from None
    return checked


# --- what the methods act on ---------------------------------------------------------


class JobQueueLike(Protocol):
    def submit_job(self, ops: list[opcodes.OpCode]) -> int: ...
    def submit_job_to_drained_queue(self, ops: list[opcodes.OpCode]) -> int: ...
    def submit_many_jobs(self, jobs: list[list[opcodes.OpCode]]) -> list[tuple[bool, Any]]: ...
    def cancel_job(self, job_id: int) -> tuple[bool, str]: ...
    def change_job_priority(self, job_id: int, priority: int) -> tuple[bool, str]: ...
    def archive_job(self, job_id: int) -> bool: ...
    def auto_archive_jobs(self, age: float, timeout: float) -> tuple[int, int]: ...
    def query_jobs(self, job_ids: list[int] | None,
                   fields: list[str]) -> list[list[Any] | None]: ...
    def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: Any,
                            prev_log_serial: Any, timeout: float) -> Any: ...
    def set_drain_flag(self, flag: bool) -> None: ...
    def get_drain_flag(self) -> bool: ...


class MasterBackend:
    """What the LUXI methods act on: the job queue and (optionally) the context.

    Also the ``source`` handed to query data sources (``.queue``, ``.context``).
    """

    def __init__(self, queue: JobQueueLike, context: Any = None) -> None:
        self.queue = queue
        self.context = context

    # jobs
    @luxi_method(luxi.REQ_SUBMIT_JOB)
    def submit_job(self, ops: OpList) -> int:
        """Queue a job of these opcodes; its id (refused while the queue is drained)."""
        return self.queue.submit_job([opcodes.from_dict(op) for op in ops])

    @luxi_method(luxi.REQ_SUBMIT_JOB_TO_DRAINED_QUEUE)
    def submit_job_to_drained_queue(self, ops: OpList) -> int:
        """Queue a job even while the queue is drained (cluster maintenance)."""
        return self.queue.submit_job_to_drained_queue([opcodes.from_dict(op) for op in ops])

    @luxi_method(luxi.REQ_SUBMIT_MANY_JOBS)
    def submit_many_jobs(self, jobs: JobList) -> list[Any]:
        """Queue several jobs; ``[[true, job id] or [false, error message], ...]``."""
        decoded = [[opcodes.from_dict(op) for op in ops] for ops in jobs]
        return [[ok, val] for ok, val in self.queue.submit_many_jobs(decoded)]

    @luxi_method(luxi.REQ_WAIT_FOR_JOB_CHANGE, client="wait_for_job_change_once")
    def wait_for_job_change(self, job_id: JobId, fields: FieldNames,
                            prev_job_info: PrevJobInfo, prev_log_serial: LogSerial,
                            timeout: Seconds) -> Any:
        """Long poll: ``"nochange"``, ``[field values, new log entries]`` or null (no job).

        The server waits at most ``WFJC_MAX_TIMEOUT`` seconds; clients poll again.
        """
        timeout = max(0.0, min(float(timeout), luxi.WFJC_MAX_TIMEOUT))
        return self.queue.wait_for_job_change(job_id, fields, prev_job_info,
                                              prev_log_serial, timeout)

    @luxi_method(luxi.REQ_CANCEL_JOB)
    def cancel_job(self, job_id: JobId) -> list[Any]:
        """Cancel a job still waiting; ``[success, message]``."""
        return list(self.queue.cancel_job(job_id))

    @luxi_method(luxi.REQ_ARCHIVE_JOB)
    def archive_job(self, job_id: JobId) -> bool:
        """Archive a finished job; whether it was archived."""
        return bool(self.queue.archive_job(job_id))

    @luxi_method(luxi.REQ_AUTO_ARCHIVE_JOBS)
    def auto_archive_jobs(self, age: JobAge, timeout: JobTimeout) -> list[int]:
        """Archive finished jobs older than ``age``; ``[archived, left over]``."""
        return list(self.queue.auto_archive_jobs(age, timeout))

    @luxi_method(luxi.REQ_CHANGE_JOB_PRIORITY)
    def change_job_priority(self, job_id: JobId, priority: Priority) -> list[Any]:
        """Change the priority of a queued job; ``[success, message]``."""
        if not constants.OP_PRIO_HIGHEST <= priority <= constants.OP_PRIO_LOWEST:
            raise errors.OpPrereqError(f"Invalid priority {priority}", errors.ECODE_INVAL)
        return list(self.queue.change_job_priority(job_id, priority))

    @luxi_method(luxi.REQ_QUERY_JOBS)
    def query_jobs(self, job_ids: JobIds, fields: FieldNames) -> list[Any]:
        """Field values per job (null for an unknown job); all jobs when ``job_ids`` is null."""
        return self.queue.query_jobs(job_ids, fields)

    @luxi_method(luxi.REQ_SET_DRAIN_FLAG)
    def set_drain_flag(self, flag: Flag) -> bool:
        """Drain (true) or undrain the job queue."""
        self.queue.set_drain_flag(flag)
        return True

    # queries
    @luxi_method(luxi.REQ_QUERY)
    def query(self, what: ResourceName, fields: FieldNames, qfilter: QueryFilter
              ) -> dict[str, Any]:
        """Query a resource (job, lock, node, instance, export): ``{"fields", "data"}``."""
        return query.query(what, fields, qfilter, source=self)

    @luxi_method(luxi.REQ_QUERY_FIELDS)
    def query_fields(self, what: ResourceName, fields: OptFieldNames) -> dict[str, Any]:
        """Definitions of a resource's fields (all when ``fields`` is null or empty)."""
        return query.query_fields(what, fields)

    @luxi_method(luxi.REQ_QUERY_EXPORTS)
    def query_exports(self, nodes: NodeNames, use_locking: Flag) -> Any:
        """Exports per node (false: node not reachable), through an OpBackupQuery job."""
        op = opcodes.OpBackupQuery.create(nodes=nodes, use_locking=use_locking)
        job_id = self.queue.submit_job([op])
        return wait_for_job_result(self.queue, job_id, luxi.QUERY_EXPORTS_TIMEOUT)[0]

    def _cfg(self) -> Any:
        if self.context is None:
            raise errors.OpPrereqError("No cluster configuration loaded", errors.ECODE_STATE)
        return self.context.cfg

    @luxi_method(luxi.REQ_QUERY_CLUSTER_INFO)
    def query_cluster_info(self) -> dict[str, Any]:
        """The cluster's configuration, its master's name and the drain flag."""
        cfg = self._cfg()
        info = cfg.get_cluster_info()
        data = info.model_dump(mode="json") if hasattr(info, "model_dump") else dict(vars(info))
        data.setdefault("master", cfg.get_master_node_name())
        data["drain_flag"] = self.queue.get_drain_flag()
        return dict(data)

    @luxi_method(luxi.REQ_QUERY_CONFIG_VALUES)
    def query_config_values(self, fields: FieldNames) -> list[Any]:
        """Values of cluster settings by name (cluster_name, master_node, drain_flag, ...)."""
        info = self.query_cluster_info()
        known = {"cluster_name", "master_node", "drain_flag", "master"}
        out = []
        for name in fields:
            if name == "master_node":
                out.append(info.get("master"))
            elif name in info or name in known:
                out.append(info.get(name))
            else:
                raise errors.OpPrereqError(f"Unknown config value '{name}'", errors.ECODE_INVAL)
        return out


def wait_for_job_result(queue: JobQueueLike, job_id: int, timeout: float) -> list[Any]:
    """Block until a job finishes; return its opresults or raise its error."""
    deadline = time.monotonic() + timeout
    prev: Any = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.OpExecError(f"Timeout waiting for job {job_id}")
        change = queue.wait_for_job_change(job_id, ["status"], prev, None, min(left, 10.0))
        if change is None:
            raise errors.JobLost(f"Job {job_id} disappeared")
        if change != luxi.JOB_NOTCHANGED:
            prev = change[0]
            if prev[0] in constants.JOBS_FINALIZED:
                break
    return luxi.job_results(job_id, queue.query_jobs([job_id], luxi.RESULT_FIELDS),
                            "disappeared")


# --- the table -------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return text.removeprefix("<class '").removesuffix("'>")


def _spec(func: Callable[..., Any]) -> MethodSpec:
    name, client_attr = func.__luxi__  # type: ignore[attr-defined]
    hints = typing.get_type_hints(func, include_extras=True)
    params = list(inspect.signature(func).parameters)[1:]  # without self
    args = tuple(Arg.from_annotation(p, hints[p]) for p in params)
    doc = inspect.getdoc(func) or ""
    return MethodSpec(name, func.__name__, client_attr, args, _type_name(hints["return"]),
                      doc)


def _collect() -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for func in vars(MasterBackend).values():
        if callable(func) and hasattr(func, "__luxi__"):
            spec = _spec(func)
            if spec.name in table:
                raise errors.ProgrammerError(f"LUXI method {spec.name} defined twice")
            table[spec.name] = spec
    return table


# wire name -> spec; built once at import
SPECS: dict[str, MethodSpec] = _collect()


def build_method_table(backend: MasterBackend) -> dict[str, Method]:
    """The server's dispatch table: wire name -> bound handler with its argument checks."""
    return {name: Method(getattr(backend, spec.attr), spec.args)
            for name, spec in SPECS.items()}


def render_markdown() -> str:
    """The method reference as doc/luxi.md shows it (generated, never edited by hand)."""
    lines = []
    for spec in sorted(SPECS.values(), key=lambda s: s.name):
        summary, _, rest = spec.doc.partition("\n")
        args = ", ".join(a.name for a in spec.args)
        lines += [f"### {spec.name}({args})", "", summary.replace("``", "`")]
        if rest.strip():
            lines += ["", rest.strip().replace("``", "`")]
        lines.append("")
        for arg in spec.args:
            lines.append(f"- `{arg.name}`: {arg.description}")
        lines += [f"- returns `{spec.returns}`",
                  f"- client: `Client.{spec.client_attr}`;"
                  f" {'safe to resend (idempotent)' if spec.idempotent else 'not resent'}",
                  ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
