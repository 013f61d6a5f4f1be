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
import json
import sys
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ganeti import constants, errors, limits, luxi, opcodes, query
from ganeti.query_resources import group, network
from ganeti.query_resources.cluster import PLACEHOLDERS, cluster_info

# --- argument types: the annotation says what is accepted and how to describe it ---

_JOB_SECONDS = f"seconds in {limits.JOB_AGE.minimum}..{limits.JOB_AGE.maximum}"



def _decimal_to_int(value: Any) -> Any:
    """A job id written as a decimal string ("12"): Ganeti's clients send both forms."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


JobId = Annotated[int, BeforeValidator(_decimal_to_int), Field(
    description="a job id (integer or decimal string)")]
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
JobIds = Annotated[list[JobId] | None, Field(description="a list of job ids or null")]
ResourceName = Annotated[str, Field(description="a resource name")]
QueryFilter = Annotated[list[Any] | None, Field(description="a filter list or null")]
OptFieldNames = Annotated[list[str] | None, Field(
    description="a list of field names or null")]
NodeNames = Annotated[list[str], Field(description="a list of node names")]
Flag = Annotated[bool, Field(description="a boolean")]
ItemNames = Annotated[list[str], Field(description="a list of names (empty: all)")]
TagKind = Annotated[str, Field(
    description="cluster, node, instance, nodegroup or network")]
TagOwner = Annotated[str | None, Field(
    description="the object's name (empty or null for the cluster)")]

# strict: JSON has no int/bool/str confusion to paper over (true is not 1)
_STRICT = ConfigDict(strict=True)


@dataclass(frozen=True)
class Arg:
    """One positional wire argument."""

    name: str
    adapter: TypeAdapter[Any]
    description: str
    # a trailing argument older clients leave out (e.g. CancelJob's kill)
    default: Any = inspect.Parameter.empty

    @property
    def optional(self) -> bool:
        return self.default is not inspect.Parameter.empty

    @classmethod
    def from_annotation(cls, name: str, annotation: Any,
                        default: Any = inspect.Parameter.empty) -> Arg:
        infos = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, FieldInfo)]
        description = next((i.description for i in infos if i.description), None)
        if description is None:
            raise errors.ProgrammerError(f"LUXI argument '{name}' has no description")
        return cls(name, TypeAdapter(annotation, config=_STRICT), description, default)


@dataclass(frozen=True)
class Method:
    """A handler and its argument checks, as the server dispatches it."""

    handler: Callable[..., Any]
    args: tuple[Arg, ...]
    # answers rows of a query (10,000 instances: some 70,000 lists): the server keeps
    # the garbage collector paused until the answer is sent (ganeti.gc_pause)
    rows: bool = False


# the methods whose answer is one row per item; none of them blocks
ROW_METHODS = frozenset({
    luxi.REQ_QUERY, luxi.REQ_QUERY_JOBS, luxi.REQ_QUERY_INSTANCES, luxi.REQ_QUERY_NODES,
    luxi.REQ_QUERY_GROUPS, luxi.REQ_QUERY_NETWORKS})


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
    required = sum(1 for a in method.args if not a.optional)
    if not required <= len(args) <= len(method.args):
        count = (str(required) if required == len(method.args)
                 else f"{required} to {len(method.args)}")
        raise errors.OpPrereqError(
            f"{name} takes {count} argument(s), got {len(args)}", errors.ECODE_INVAL)
    checked = []
    for value, spec in zip(args, method.args, strict=False):
        try:
            checked.append(spec.adapter.validate_python(value))
        except ValidationError:
            raise errors.OpPrereqError(
                f"{name}: argument '{spec.name}' must be {spec.description},"
                f" got {value!r:.80}", errors.ECODE_INVAL) from None
    checked.extend(a.default for a in method.args[len(args):])
    return checked


# --- what the methods act on ---------------------------------------------------------


class JobQueueLike(Protocol):
    def submit_job(self, ops: list[opcodes.OpCode]) -> int: ...
    def submit_job_to_drained_queue(self, ops: list[opcodes.OpCode]) -> int: ...
    def submit_many_jobs(self, jobs: list[list[opcodes.OpCode]]) -> list[tuple[bool, Any]]: ...
    def cancel_job(self, job_id: int, kill: bool = False) -> tuple[bool, str]: ...
    def change_job_priority(self, job_id: int, priority: int) -> tuple[bool, str]: ...
    def archive_job(self, job_id: int) -> bool: ...
    def auto_archive_jobs(self, age: float, timeout: float) -> tuple[int, int]: ...
    def query_jobs(self, job_ids: list[int] | None,
                   fields: list[str]) -> list[list[Any] | None]: ...
    def query_archived_jobs(self, fields: list[str]) -> list[list[Any]]: ...
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
    def cancel_job(self, job_id: JobId, kill: Flag = False) -> list[Any]:
        """Cancel a job still waiting; ``[success, message]``.

        ``kill`` (Ganeti 3.0) may be left out.  A running opcode cannot be
        interrupted, so killing a running job is refused (``[false, why]``);
        a job not yet running is canceled either way.
        """
        return list(self.queue.cancel_job(job_id, kill))

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
        """Query a resource (job, lock, node, group, network, instance, export, transfer).

        The answer is ``{"fields", "data"}``, each value a ``[status, value]`` pair.
        """
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
        """The cluster's configuration, its master's name and the drain flag.

        Also every key Ganeti 3.0's `gnt-cluster info` and `version` read
        (software_version, protocol_version, architecture, reserved_lvs, ...).
        """
        data = cluster_info(self._cfg(), getattr(self.context, "paths", None))
        data["drain_flag"] = self.queue.get_drain_flag()
        return data

    @luxi_method(luxi.REQ_QUERY_CONFIG_VALUES)
    def query_config_values(self, fields: FieldNames) -> list[Any]:
        """Values of cluster settings by name (cluster_name, master_node, drain_flag, ...).

        `watcher_pause` is always null: the watcher cannot be paused.
        """
        info = self.query_cluster_info()
        info["master_node"] = info["master"]
        info.setdefault("watcher_pause", None)
        out = []
        for name in fields:
            if name not in info:
                raise errors.OpPrereqError(f"Unknown config value '{name}'", errors.ECODE_INVAL)
            out.append(info[name])
        return out

    # Ganeti's classic queries: plain values per item, items by name
    @luxi_method(luxi.REQ_QUERY_INSTANCES)
    def query_instances(self, names: ItemNames, fields: FieldNames,
                        use_locking: Flag) -> list[Any]:
        """Field values per instance, in the order of `names` (all, by name, when empty).

        Unknown names or fields are refused; `use_locking` must be false (as in 3.0).
        """
        return self._classic_query(query.RESOURCE_INSTANCE, "Instance", names, fields,
                                   use_locking)

    @luxi_method(luxi.REQ_QUERY_NODES)
    def query_nodes(self, names: ItemNames, fields: FieldNames,
                    use_locking: Flag) -> list[Any]:
        """Field values per node, like QueryInstances."""
        return self._classic_query(query.RESOURCE_NODE, "Node", names, fields, use_locking)

    @luxi_method(luxi.REQ_QUERY_GROUPS)
    def query_groups(self, names: ItemNames, fields: FieldNames,
                     use_locking: Flag) -> list[Any]:
        """Field values per node group, like QueryInstances."""
        return self._classic_query(group.RESOURCE_GROUP, "Node group", names, fields,
                                   use_locking)

    @luxi_method(luxi.REQ_QUERY_NETWORKS)
    def query_networks(self, names: ItemNames, fields: FieldNames,
                       use_locking: Flag) -> list[Any]:
        """Field values per network, like QueryInstances."""
        return self._classic_query(network.RESOURCE_NETWORK, "Network", names, fields,
                                   use_locking)

    def _classic_query(self, what: str, title: str, names: list[str], fields: list[str],
                       use_locking: bool) -> list[Any]:
        if use_locking:
            raise errors.OpPrereqError(
                "use_locking: queries over LUXI do not support using locks",
                errors.ECODE_INVAL)
        qfilter = ["|", *(["=", "name", n] for n in names)] if names else None
        result = query.query(what, ["name", *fields], qfilter, source=self)
        unknown = [f["name"] for f in result["fields"][1:] if f["kind"] == query.QFT_UNKNOWN]
        if unknown:
            raise errors.OpPrereqError(
                f"Unknown output fields selected: {', '.join(unknown)}", errors.ECODE_INVAL)
        rows = {row[0][1]: [value for _, value in row[1:]] for row in result["data"]}
        if not names:
            return [rows[name] for name in sorted(rows)]
        missing = [n for n in names if n not in rows]
        if missing:
            raise errors.OpPrereqError(f"{title} '{missing[0]}' not known", errors.ECODE_NOENT)
        return [rows[name] for name in names]

    @luxi_method(luxi.REQ_QUERY_TAGS)
    def query_tags(self, kind: TagKind, name: TagOwner) -> list[str]:
        """The tags of the cluster or of one node, instance, node group or network (sorted)."""
        snap = self._cfg().snapshot()
        if kind == constants.TAG_CLUSTER:
            return sorted(snap.get_cluster_info().tags)
        # kind -> (what to call it, its objects by uuid; shared, read only)
        tables: dict[str, tuple[str, Callable[[], Mapping[str, Any]]]] = {
            constants.TAG_NODE: ("Node", snap.get_all_nodes_info),
            constants.TAG_INSTANCE: ("Instance", snap.get_all_instances_info),
            constants.TAG_NODEGROUP: ("Node group", snap.get_all_nodegroups_info),
            constants.TAG_NETWORK: ("Network", snap.get_networks),
        }
        if kind not in tables:
            raise errors.OpPrereqError(
                f"QueryTags: argument 'kind' must be one of"
                f" {', '.join(sorted([*tables, constants.TAG_CLUSTER]))}, got {kind!r:.40}",
                errors.ECODE_INVAL)
        title, objects_of = tables[kind]
        found = next((o for o in objects_of().values() if o.name == name), None)
        if found is None:
            raise errors.OpPrereqError(f"{title} '{name}' not known", errors.ECODE_NOENT)
        return sorted(found.tags)


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
    sig = inspect.signature(func).parameters
    args = tuple(Arg.from_annotation(p, hints[p], sig[p].default) for p in params)
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
    return {name: Method(getattr(backend, spec.attr), spec.args, name in ROW_METHODS)
            for name, spec in SPECS.items()}


def render_versions() -> list[str]:
    """The accepted protocol versions (constants.LUXI_ACCEPTED_VERSIONS) as a table."""
    lines = ["### Accepted versions", "",
             "| `version` | sent by |", "|---|---|"]
    lines += [f"| {version} | {release} |"
              for version, release in sorted(constants.LUXI_ACCEPTED_VERSIONS.items())]
    return [*lines, "", "A request without `version` is accepted too.", ""]


def render_placeholders() -> list[str]:
    """QueryClusterInfo's keys for features we lack, their value and why."""
    lines = ["### QueryClusterInfo: keys for features this project lacks", "",
             "Ganeti 3.0's `gnt-cluster info` reads these keys; the value stands for"
             " \"not here\":", "", "| key | value | why |", "|---|---|---|"]
    lines += [f"| `{key}` | `{json.dumps(value)}` | {why} |"
              for key, (value, why) in sorted(PLACEHOLDERS.items())]
    return [*lines, ""]


def render_markdown() -> str:
    """The method reference as doc/luxi.md shows it (generated, never edited by hand)."""
    lines = [*render_versions(), *render_placeholders(), "### Methods", ""]
    for spec in sorted(SPECS.values(), key=lambda s: s.name):
        summary, _, rest = spec.doc.partition("\n")
        args = ", ".join(f"[{a.name}]" if a.optional else a.name for a in spec.args)
        lines += [f"#### {spec.name}({args})", "", summary.replace("``", "`")]
        if rest.strip():
            lines += ["", rest.strip().replace("``", "`")]
        lines.append("")
        for arg in spec.args:
            default = (f" (optional, default `{json.dumps(arg.default)}`)"
                       if arg.optional else "")
            lines.append(f"- `{arg.name}`: {arg.description}{default}")
        lines += [f"- returns `{spec.returns}`",
                  f"- client: `Client.{spec.client_attr}`;"
                  f" {'safe to resend (idempotent)' if spec.idempotent else 'not resent'}",
                  ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
