"""Export lifecycle and backup schedules: extensions, Ganeti's RAPI has none (#1867).

The CLI's ``gnt-backup list/remove/protect/modify/verify/prune`` and
``gnt-backup schedule ...`` over HTTP.  A body is the opcode's own fields
(less what the path and the query string give): it is validated by
``opcodes.OpX.create`` and documented by the opcode's JSON schema, so the
CLI, the job queue and this API accept exactly the same values.  Writes
submit one job and answer its id; reads run the query opcodes the CLI runs
and answer their results.  A name in the path that does not exist is a 404
before any change is submitted (the check is such a read); run-now is the
backup runner's pass (``ganeti.tools.backup_runner``), which returns once its
jobs are queued.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from ganeti import cli, errors, luxi, opcodes, qlang, query
from ganeti.backup import exportmeta, generations, retention
from ganeti.backup import schedule as sched
from ganeti.rapi import http, routes
from ganeti.rapi.fill import body_dict
from ganeti.tools import backup_runner

# opcode fields the query string gives (dry-run, reason), never a body
_QUERY_FIELDS = frozenset({"dry_run", "reason"})

NODES = routes.Param("nodes", list, "Only these nodes (repeatable; none: all online)", [])
INSTANCES = routes.Param("instances", list, "Only these instances (repeatable; none: all)",
                         [])

JOB_ID = "a job id"
_JOB_SCHEMA: dict[str, Any] = {"type": "integer", "description": "Job id"}


# --- bodies: the opcodes' fields ----------------------------------------------------------


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    """The schema with its ``$ref``s replaced by their definitions (it stands alone)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            # the definition, and what the field says next to its $ref (description...)
            return {**_inline(defs[ref.removeprefix("#/$defs/")], defs),
                    **{k: _inline(v, defs) for k, v in node.items() if k != "$ref"}}
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def body_fields(cls: type[opcodes.OpCode], given: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fields a body may set: the opcode's, less the query string's and ``given``."""
    return tuple(name for name in cls.model_fields
                 if name not in _QUERY_FIELDS and name not in given)


def body_schema(cls: type[opcodes.OpCode], given: tuple[str, ...] = (),
                omit: tuple[str, ...] = ()) -> dict[str, Any]:
    """The opcode's JSON schema restricted to :func:`body_fields` (less ``omit``)."""
    full = cls.model_json_schema()
    names = body_fields(cls, (*given, *omit))
    schema: dict[str, Any] = {
        "type": "object", "title": cls.__name__,
        "description": (cls.__doc__ or "").strip().split("\n\n", 1)[0],
        "properties": {n: _inline(full["properties"][n], full.get("$defs", {}))
                       for n in names},
        "additionalProperties": False,
    }
    required = [n for n in full.get("required", []) if n in names]
    if required:
        schema["required"] = required
    return schema


def build(cls: type[opcodes.OpCode], req: routes.Request,
          labels: Mapping[str, str] | None = None, omit: tuple[str, ...] = (),
          use_body: bool = True, **given: Any) -> opcodes.OpCode:
    """The opcode of a request: the body's fields (``use_body``), ``given`` (path and
    query), dry-run and the reason trail; validated by the opcode, its errors naming the
    field as the client gave it (``body.cron``; ``labels`` maps the other fields to their
    parameter)."""
    body = body_dict(req.body) if use_body else {}
    allowed = body_fields(cls, (*given, *omit)) if use_body else ()
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise http.HttpBadRequest("; ".join(
            f"Parameter 'body.{name}' fails validation: unknown parameter" for name in unknown)
            + f" (accepted: {', '.join(allowed) or 'none'})")
    # a query run for a write (a pre-check, prune's plan) is no dry run: it must answer
    dry_run = use_body and bool(req.params.get("dry-run"))
    fields = {**body, **given, "dry_run": dry_run, "reason": req.reason_trail()}
    try:
        return cls.create(**fields)
    except errors.OpPrereqError as err:
        names = {**{name: f"body.{name}" for name in allowed}, **(labels or {})}
        text = re.sub(rf"'{cls.OP_ID}\.([a-z_]+)",
                      lambda m: f"'{names.get(m.group(1), m.group(1))}", str(err.args[0]))
        raise http.HttpBadRequest(text) from None


def _query(cl: luxi.Client, op: opcodes.OpCode) -> Any:
    """Run a query opcode as the CLI does (a job, followed to its end); its result."""
    return cli.poll_job(cl.submit_job([op]), cl, lambda _entry: None)[0]


def _result_schema(cls: type[opcodes.OpCode]) -> dict[str, Any]:
    schema = TypeAdapter(cls.OP_RESULT).json_schema()
    return dict(_inline(schema, schema.get("$defs", {})))


# --- exports and their generations ----------------------------------------------------------

_GENERATIONS_SCHEMA = _result_schema(opcodes.OpBackupListGenerations)


def _generations(req: routes.Request, cl: luxi.Client, instances: list[str],
                 nodes: list[str]) -> dict[str, Any]:
    op = build(opcodes.OpBackupListGenerations, req, use_body=False,
               instances=instances, nodes=nodes)
    return dict(_query(cl, op))


def _instance_exists(cl: luxi.Client, name: str) -> bool:
    result = cl.query(query.RESOURCE_INSTANCE, ["name"], [qlang.OP_EQUAL, "name", name])
    return bool(result["data"])


def _not_found(what: str, unreachable: list[str]) -> http.HttpNotFound:
    hint = f" (not asked: {', '.join(unreachable)})" if unreachable else ""
    return http.HttpNotFound(f"{what}{hint}")


def _instance_generations(req: routes.Request, generation: str | None = None
                          ) -> dict[str, Any]:
    """The instance's generations (one of them: ``generation``); 404 when there is none
    (for the whole list: when neither the instance nor an export of that name exists)."""
    name = req.args["instance_name"]
    with req.client() as cl:
        found = _generations(req, cl, [name], req.params.get("nodes", []))
        gens = [g for g in found["generations"] if g["instance"] == name and
                (generation is None or g["generation"] == generation)]
        if generation is not None and not gens:
            raise _not_found(f"No export generation {generation!r} of {name!r}",
                             found["unreachable"])
        if generation is None and not gens and not _instance_exists(cl, name):
            raise _not_found(f"No instance or export {name!r}", found["unreachable"])
    return {"generations": gens, "unreachable": found["unreachable"]}


@routes.route("/2/exports", "GET", access=routes.READ, extension=True,
              result="every generation (node, instance, generation, timestamp, sizes,"
                     " newest, protected, note, verify) and the nodes that did not answer",
              params=(NODES, INSTANCES, routes.Param(
                  "newest", bool, "Only the newest export of each instance on each node",
                  False)),
              result_schema=_GENERATIONS_SCHEMA)
def list_exports(req: routes.Request) -> Any:
    """List the exports of the cluster, with every retained generation.

    ``gnt-backup list -g``: one entry per generation and node; ``newest`` marks
    the export Ganeti's tools see.  Sizes are bytes (``used``, ``unique``,
    ``shared``: doc/incremental-exports.md)."""
    with req.client() as cl:
        found = _generations(req, cl, req.params["instances"], req.params["nodes"])
    if req.params["newest"]:
        found["generations"] = [g for g in found["generations"] if g["newest"]]
    return found


@routes.route("/2/instances/{instance_name}/exports", "GET", access=routes.READ,
              extension=True, params=(NODES,), result_schema=_GENERATIONS_SCHEMA,
              result="the instance's generations on every node and the nodes that did"
                     " not answer")
def instance_exports(req: routes.Request) -> Any:
    """List the exports of one instance, with every retained generation.

    The instance may no longer exist (its exports outlive it); 404 when
    neither the instance nor an export of that name exists."""
    return _instance_generations(req)


@routes.route("/2/instances/{instance_name}/exports", "DELETE", access=routes.WRITE,
              extension=True, params=(routes.DRY_RUN,), result=JOB_ID, result_schema=_JOB_SCHEMA)
def remove_exports(req: routes.Request) -> Any:
    """Remove the newest export of an instance on every node (``gnt-backup remove``).

    Refused (the job fails, ``wrong_state``) while it is protected; older
    generations stay until pruned or removed by name."""
    name = req.args["instance_name"]
    op = build(opcodes.OpBackupRemove, req, instance_name=name)
    if not [g for g in _instance_generations(req)["generations"] if g["newest"]]:
        raise http.HttpNotFound(f"No export of {name!r}")
    return req.submit(op)


@routes.route("/2/instances/{instance_name}/exports/{generation}", "GET",
              access=routes.READ, extension=True, params=(NODES,),
              result_schema=_GENERATIONS_SCHEMA,
              result="the generation's copies (one per node holding it) and the nodes that"
                     " did not answer")
def generation_info(req: routes.Request) -> Any:
    """One export generation of an instance (``NAME@GENERATION``)."""
    return _instance_generations(req, req.args["generation"])


@routes.route("/2/instances/{instance_name}/exports/{generation}", "DELETE",
              access=routes.WRITE, extension=True, params=(NODES, routes.DRY_RUN), result=JOB_ID,
              result_schema=_JOB_SCHEMA)
def remove_generation(req: routes.Request) -> Any:
    """Remove one older generation (``gnt-backup remove NAME@GENERATION``).

    The newest export is removed by ``DELETE /2/instances/NAME/exports``; a
    protected generation is refused (the job fails, ``wrong_state``)."""
    op = build(opcodes.OpBackupRemoveGeneration, req,
               instance_name=req.args["instance_name"],
               generation=req.args["generation"], nodes=req.params["nodes"])
    _instance_generations(req, req.args["generation"])
    return req.submit(op)


_MODIFY_GIVEN = ("instance_name", "generation")


@routes.route("/2/instances/{instance_name}/exports/{generation}/modify", "PUT",
              access=routes.WRITE, extension=True, params=(routes.DRY_RUN,), result=JOB_ID,
              result_schema=_JOB_SCHEMA,
              body=routes.Body(body_schema(opcodes.OpBackupSetGenerationParams,
                                           _MODIFY_GIVEN),
                               description="protected and/or note (None: unchanged; ''"
                                           " clears the note), nodes to look on"))
def modify_generation(req: routes.Request) -> Any:
    """Protect or unprotect a generation, or set its note (``gnt-backup modify``).

    A protected generation is kept by prune and refused by removal.  The
    newest export is addressed by its generation name as well."""
    op = build(opcodes.OpBackupSetGenerationParams, req,
               instance_name=req.args["instance_name"], generation=req.args["generation"])
    assert isinstance(op, opcodes.OpBackupSetGenerationParams)
    if op.protected is None and op.note is None:
        raise http.HttpBadRequest("body: nothing to change: give protected and/or note")
    if op.note is not None:
        try:
            exportmeta.check_note(op.note)
        except exportmeta.MetaError as err:
            raise http.HttpBadRequest(f"Invalid value for body.{err}") from None
    _instance_generations(req, req.args["generation"])
    return req.submit(op)


@routes.route("/2/instances/{instance_name}/exports/{generation}/verify", "PUT",
              access=routes.WRITE, extension=True, params=(routes.DRY_RUN,), result=JOB_ID,
              result_schema=_JOB_SCHEMA,
              body=routes.Body(body_schema(opcodes.OpBackupVerify, ("exports",),
                                           ("newest_only",)), required=False))
def verify_generation(req: routes.Request) -> Any:
    """Verify one generation: re-hash its dumps (``gnt-backup verify NAME@GENERATION``).

    The job's result is the verify report (doc/opcodes.md, ``VerifyReport``);
    the outcome is recorded with the generation."""
    name, generation = req.args["instance_name"], req.args["generation"]
    op = build(opcodes.OpBackupVerify, req, omit=("newest_only",),
               exports=[f"{name}@{generation}"])
    _instance_generations(req, generation)
    return req.submit(op)


@routes.route("/2/exports/verify", "PUT", access=routes.WRITE, extension=True,
              params=(routes.DRY_RUN,), result=JOB_ID, result_schema=_JOB_SCHEMA,
              body=routes.Body(body_schema(opcodes.OpBackupVerify), required=False,
                               description="exports: INSTANCE (every generation) or"
                                           " INSTANCE@GENERATION; none: every export"))
def verify_exports(req: routes.Request) -> Any:
    """Verify exports: re-hash their dumps against checksums and block indexes.

    ``gnt-backup verify``: a job whose result is the verify report
    (``VerifyReport``: per generation and node ok, problems, bad blocks)."""
    return req.submit(build(opcodes.OpBackupVerify, req))


def _prune_policy(req: routes.Request, op: opcodes.OpBackupPrune) -> dict[str, int]:
    """The rules of the body or, with ``schedule``, of that schedule."""
    policy = op.rules()
    name = req.params["schedule"]
    if name is not None:
        if policy:
            raise http.HttpBadRequest("Query parameter 'schedule' and the body's keep_*"
                                      " rules exclude each other")
        with req.client() as cl:
            found = _schedules(cl, [name])
        policy = dict(found[0].get("retention") or {})
    if retention.is_keep_all(policy):
        raise http.HttpBadRequest(
            "body: prune needs a retention policy: set at least one of "
            + ", ".join(retention.RULE_NAMES) + " (or the query parameter 'schedule')")
    return policy


_PLAN_SCHEMA = _result_schema(opcodes.OpBackupPrune)


@routes.route("/2/exports/prune", "PUT", access=routes.WRITE, extension=True,
              params=(routes.Param("dry-run", bool, "Answer the plan (which generation"
                                                    " goes and why) and remove nothing",
                                   False),
                      routes.Param("schedule", str, "Use this schedule's retention policy"
                                                    " (instead of keep_* rules)")),
              result="a job id; with dry-run the plan: each generation with keep and"
                     " reasons, and the nodes that did not answer",
              result_schema={"oneOf": [_JOB_SCHEMA, _PLAN_SCHEMA]},
              body=routes.Body(body_schema(opcodes.OpBackupPrune), required=False,
                               description="keep_* rules, instances and nodes (none: all)"))
def prune(req: routes.Request) -> Any:
    """Remove the generations a retention policy does not keep (``gnt-backup prune``).

    The newest export and protected generations are always kept.  With
    ``dry-run=1`` the answer is the plan, computed from the same listing and
    rules as the job's."""
    op = build(opcodes.OpBackupPrune, req)
    assert isinstance(op, opcodes.OpBackupPrune)
    policy = _prune_policy(req, op)
    if req.params["dry-run"]:
        with req.client() as cl:
            found = _generations(req, cl, list(op.instances), list(op.nodes))
        return {"plan": generations.prune_plan(found["generations"], policy),
                "unreachable": found["unreachable"]}
    for rule, count in policy.items():     # a schedule's policy (the body's: as is)
        setattr(op, rule, count)
    return req.submit(op)


# --- backup schedules --------------------------------------------------------------------

_SCHEDULE = "/2/backup-schedules/{schedule_name}"
_NAME_LABEL = {"name": "schedule_name"}


def _schedules(cl: luxi.Client, names: list[str]) -> list[dict[str, Any]]:
    """The schedules as configured; an unknown name is a 404 (the opcode's NOENT)."""
    return list(_query(cl, opcodes.OpBackupScheduleQuery.create(names=names)))


def _schedule_view(schedule: dict[str, Any], defaults: dict[str, Any],
                   state: backup_runner.RunnerState) -> dict[str, Any]:
    """The configured schedule, its settings in effect and the runner's state of it (jobs
    of the run in progress; a finished run's result shows before the runner records it,
    as in ``gnt-backup schedule list``)."""
    st = state.schedules.get(schedule["name"], backup_runner.ScheduleState())
    settings = sched.settings(defaults, schedule)
    since = st.last_run if st.last_run is not None else float(schedule["ctime"])
    return {**schedule, "settings": settings.model_dump(mode="json"), "state": {
        "last_run": st.last_run, "last_finished": st.last_finished,
        "last_result": st.last_result or None, "jobs": list(st.jobs),
        "next_run": sched.next_slot(schedule["cron"], since, settings.timezone)
        if schedule["enabled"] else None}}


def _views(req: routes.Request, names: list[str]) -> list[dict[str, Any]]:
    with req.client() as cl:
        found = _schedules(cl, names)
        defaults = dict(cl.query_cluster_info().get("backup_defaults") or {})
        state = backup_runner.resolved_state(cl)
    return [_schedule_view(s, defaults, state) for s in found]


@routes.route("/2/backup-schedules", "GET", access=routes.READ, extension=True,
              params=(routes.BULK,),
              result="[{id, uri}] per schedule; with bulk=1 each schedule's fields, its"
                     " settings in effect and the runner's state (last run and result,"
                     " running jobs, next run)")
def list_schedules(req: routes.Request) -> Any:
    """List the backup schedules (``gnt-backup schedule list``)."""
    if req.params["bulk"]:
        return _views(req, [])
    with req.client() as cl:
        found = _schedules(cl, [])
    return [{"id": s["name"], "uri": f"/2/backup-schedules/{s['name']}"} for s in found]


@routes.route("/2/backup-schedules", "POST", access=routes.WRITE, extension=True,
              params=(routes.DRY_RUN,), result=JOB_ID, result_schema=_JOB_SCHEMA,
              body=routes.Body(body_schema(opcodes.OpBackupScheduleAdd),
                               description="the schedule's name and fields"
                                           " (doc/scheduled-exports.md)"))
def add_schedule(req: routes.Request) -> Any:
    """Add a backup schedule (``gnt-backup schedule add``).

    Each field's syntax and bounds and the selection and node policy are
    checked here (400); what needs the cluster (known nodes and instances,
    compression tools, snapshot support) by the job.  409 if the name is
    taken."""
    op = build(opcodes.OpBackupScheduleAdd, req)
    assert isinstance(op, opcodes.OpBackupScheduleAdd)
    try:
        sched.check_selection(op.instances, op.tags, op.all_instances)
        sched.check_target(op.node_policy, op.target_node)
    except errors.OpPrereqError as err:
        raise http.HttpBadRequest(str(err.args[0])) from None
    with req.client() as cl:
        if op.name in {s["name"] for s in _schedules(cl, [])}:
            raise http.HttpConflict(f"Backup schedule {op.name!r} already exists")
        return cl.submit_job([op])


@routes.route(_SCHEDULE, "GET", access=routes.READ, extension=True,
              result="the schedule's fields, its settings in effect and the runner's state")
def get_schedule(req: routes.Request) -> Any:
    """One backup schedule, with the runner's state of it.

    ``state``: ``last_run``, ``last_finished``, ``last_result`` (``success`` or
    ``failed: INSTANCES``), ``jobs`` (the run in progress) and ``next_run``
    (the next cron slot; null while disabled).  ``settings``: the backup
    settings in effect (the cluster's defaults with the schedule's
    overrides)."""
    return _views(req, [req.args["schedule_name"]])[0]


def _existing(req: routes.Request) -> str:
    name = req.args["schedule_name"]
    with req.client() as cl:
        _schedules(cl, [name])
    return name


@routes.route(f"{_SCHEDULE}/modify", "PUT", access=routes.WRITE, extension=True,
              params=(routes.DRY_RUN,), result=JOB_ID, result_schema=_JOB_SCHEMA,
              body=routes.Body(body_schema(opcodes.OpBackupScheduleModify, ("name",)),
                               description="the fields to change (unset: unchanged);"
                                           " retention replaces the policy, overrides are"
                                           " merged (null drops one)"))
def modify_schedule(req: routes.Request) -> Any:
    """Change a backup schedule (``gnt-backup schedule modify``)."""
    op = build(opcodes.OpBackupScheduleModify, req, _NAME_LABEL,
               name=req.args["schedule_name"])
    assert isinstance(op, opcodes.OpBackupScheduleModify)
    if not op.changes():
        raise http.HttpBadRequest("body: nothing to change: give at least one field")
    _existing(req)
    return req.submit(op)


@routes.route(_SCHEDULE, "DELETE", access=routes.WRITE, extension=True, params=(routes.DRY_RUN,),
              result=JOB_ID, result_schema=_JOB_SCHEMA)
def remove_schedule(req: routes.Request) -> Any:
    """Remove a backup schedule (its exports stay)."""
    op = build(opcodes.OpBackupScheduleRemove, req, _NAME_LABEL,
               name=req.args["schedule_name"])
    _existing(req)
    return req.submit(op)


_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {
        "schedule": {"type": "string"}, "instance": {"type": "string"},
        "status": {"enum": ["ok", "failed", "skipped", "planned", "submitted"]},
        "detail": {"type": "string"}, "job_id": {"type": ["integer", "null"]}}}


@routes.route(f"{_SCHEDULE}/run-now", "PUT", access=routes.WRITE, extension=True,
              params=(routes.Param("dry-run", bool, "Only plan: which instance would be"
                                                    " exported where", False),),
              result="jobs: the ids of the submitted jobs (one per instance); outcomes: the"
                     " runner's lines (submitted, planned, skipped, failed, and jobs of"
                     " earlier runs it collected)",
              result_schema={"type": "object", "properties": {
                  "jobs": {"type": "array", "items": _JOB_SCHEMA},
                  "outcomes": {"type": "array", "items": _OUTCOME_SCHEMA}}})
def run_schedule_now(req: routes.Request) -> Any:
    """Run a schedule now, due or not (``gnt-backup schedule run-now --no-wait``).

    One pass of the backup runner: one export job per selected instance (then
    verify and prune, as the schedule says), answered as soon as they are
    queued; the schedule's cron slots do not move.  The runner's next pass
    records the run's result and notifies.  A run whose previous jobs still
    run is skipped (its outcome says so)."""
    name = _existing(req)
    try:
        with req.client() as cl:
            report = backup_runner.run_pass(cl, [name], dry_run=req.params["dry-run"],
                                            wait=False)
    except errors.LockError as err:
        raise http.HttpConflict(str(err)) from None
    return {"jobs": [o.job_id for o in report.outcomes
                     if o.schedule == name and o.status == "submitted"],
            "outcomes": [{"schedule": o.schedule, "instance": o.instance,
                          "status": o.status, "detail": o.detail, "job_id": o.job_id}
                         for o in report.outcomes]}
