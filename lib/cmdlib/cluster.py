"""Cluster-level logical units."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from pydantic import ValidationError

from ganeti import (
    bootstrap,
    config_journal,
    constants,
    crypto,
    errors,
    locking,
    objects,
    opcodes,
)
from ganeti.backup import remote
from ganeti.cmdlib.base import FeedbackFn, LogicalUnit, NoHooksLU, ResultWithJobs
from ganeti.hooks.master import run_post_hook
from ganeti.query_resources.cluster import cluster_info

# Ganeti indents a failed verify hook's output by six spaces per line
_HOOKS_INDENT_RE = re.compile("^", re.M)


class LUClusterQuery(NoHooksLU):
    """Cluster information for `gnt-cluster info` and LUXI QueryClusterInfo."""

    REQ_BGL = False

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        return cluster_info(self.cfg, getattr(self.context, "paths", None))


class LUClusterSetParams(LogicalUnit):
    """Change cluster settings (today: the backup defaults)."""

    HPATH = "cluster-modify"
    HTYPE = constants.HTYPE_CLUSTER
    REQ_BGL = False
    op: opcodes.OpClusterSetParams

    def BuildHooksEnv(self) -> dict[str, Any]:
        # Ganeti's variables; we have no volume group to change, so it is always None
        return {"OP_TARGET": self.cfg.get_cluster_info().cluster_name,
                "NEW_VG_NAME": str(getattr(self.op, "vg_name", None))}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        master = self.cfg.get_master_node_name()
        return [master], [master]

    def CheckArguments(self) -> None:
        if not self.op.backup_defaults:
            raise errors.OpPrereqError("Nothing to change", errors.ECODE_INVAL)

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        self.cluster = self.cfg.get_cluster_info()
        merged = {**self.cluster.backup_defaults.model_dump(), **self.op.backup_defaults}
        try:
            self.new_defaults = objects.BackupDefaults.model_validate(merged)
        except ValidationError as err:
            raise errors.OpPrereqError(
                f"Invalid backup defaults: {objects.describe_errors(err, 'backup_defaults')}",
                errors.ECODE_INVAL) from None

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        self.cluster.backup_defaults = self.new_defaults
        self.cfg.update(self.cluster)
        changed = sorted(self.op.backup_defaults)
        feedback_fn(f"Changed backup defaults: {', '.join(changed)}")
        return changed


class LUClusterVerify(NoHooksLU):
    """Submit the verification of every node group (or of ``group_name``) as jobs.

    As in Ganeti, the checks run in OpClusterVerifyGroup jobs; the result is the
    job-submitted ``{"jobs": [...]}`` its clients follow.
    """

    REQ_BGL = False
    op: opcodes.OpClusterVerify

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        groups = {g.name: g for g in self.cfg.get_all_nodegroups_info().values()}
        if self.op.group_name is not None and self.op.group_name not in groups:
            raise errors.OpPrereqError(f"Node group '{self.op.group_name}' not known",
                                       errors.ECODE_NOENT)
        self.group_names = [self.op.group_name] if self.op.group_name else sorted(groups)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        return ResultWithJobs([[opcodes.OpClusterVerifyGroup.create(
            group_name=name, priority=self.op.priority, reason=list(self.op.reason),
            error_codes=self.op.error_codes, skip_checks=list(self.op.skip_checks))]
            for name in self.group_names])


class VerifyProblem(str):
    """One verify problem: its text as shown without --error-codes ("node X: ..."),
    and Ganeti's (type, code) and item, which --error-codes shows."""

    descriptor: tuple[str, str]
    item: str
    message: str


def verify_problem(descriptor: tuple[str, str], item: str, message: str) -> VerifyProblem:
    problem = VerifyProblem(f"{descriptor[0]} {item}: {message}" if item else message)
    problem.descriptor, problem.item, problem.message = descriptor, item, message
    return problem


_NODE_PROBLEM_RE = re.compile(r"^node (\S+): (.*)$", re.S)


def format_verify_problem(problem: str, error_codes: bool, log_type: str = "ERROR") -> str:
    """A problem as Ganeti's verify logs it: ``  - ERROR: node X: ...``, or with
    error_codes ``  - ERROR:CODE:TYPE:ITEM:MESSAGE``.  A plain-text problem gets a
    code from its form (``node X: ...``: ENODESETUP, else ECLUSTERCFG)."""
    if not error_codes:
        return f"  - {log_type}: {problem}"
    if isinstance(problem, VerifyProblem):
        (itype, code), item, message = problem.descriptor, problem.item, problem.message
    elif (match := _NODE_PROBLEM_RE.match(problem)) is not None:
        (itype, code), item, message = constants.CV_ENODESETUP, match[1], match[2]
    else:
        (itype, code), item, message = constants.CV_ECLUSTERCFG, "", problem
    return f"  - {log_type}:{code}:{itype}:{item}:{message}"


class LUClusterVerifyGroup(LogicalUnit):
    """Check that a group's online nodes answer and run a compatible daemon, and that
    they hold no orphan disk files or stale export leftovers.

    Its hooks are Ganeti's group verify hooks: post phase only, on the group's
    nodes; a failed script is a verify problem.  Problems are logged as
    Ganeti logs them ("  - ERROR: ..."); the result is True when there is none.
    """

    HPATH = "cluster-verify"
    HTYPE = constants.HTYPE_CLUSTER
    REQ_BGL = False
    op: opcodes.OpClusterVerifyGroup

    def ExpandNames(self) -> None:
        self.needed_locks = {locking.LEVEL_NODE: locking.ALL_SET}
        self.share_locks[locking.LEVEL_NODE] = True

    def CheckPrereq(self) -> None:
        group = next((g for g in self.cfg.get_all_nodegroups_info().values()
                      if g.name == self.op.group_name), None)
        if group is None:
            raise errors.OpPrereqError(f"Node group '{self.op.group_name}' not known",
                                       errors.ECODE_NOENT)
        self.group_nodes = sorted((n for n in self.cfg.snapshot().get_all_nodes_info().values()
                                   if n.group == group.uuid), key=lambda n: n.name)

    def BuildHooksEnv(self) -> dict[str, Any]:
        env = {"CLUSTER_TAGS": " ".join(self.cfg.get_cluster_info().tags)}
        env.update((f"NODE_TAGS_{node.name}", " ".join(node.tags))
                   for node in self.group_nodes)
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        return [], [n.name for n in self.group_nodes]

    def HooksCallBack(self, phase: str, hook_results: Any, feedback_fn: FeedbackFn,
                      lu_result: Any) -> Any:
        """Failed post scripts and nodes that could not run them are verify problems,
        shown as Ganeti shows them (the script's output indented below)."""
        if phase != constants.HOOKS_PHASE_POST or not isinstance(lu_result, bool):
            return lu_result
        feedback_fn("* Hooks Results")
        failures: dict[str, str] = getattr(hook_results, "failures", {})
        for node in sorted(set(hook_results or {}) | set(failures)):
            if node in failures:
                feedback_fn(self._format(verify_problem(
                    constants.CV_ENODEHOOKS, node,
                    f"Communication failure in hooks execution: {failures[node]}")))
                lu_result = False
                continue
            for script, status, output in hook_results[node]:
                if status != constants.HKR_FAIL:
                    continue
                feedback_fn(self._format(verify_problem(
                    constants.CV_ENODEHOOKS, node, f"Script {script} failed, output:")))
                feedback_fn(_HOOKS_INDENT_RE.sub("      ", output.rstrip("\n")))
                lu_result = False
        return lu_result

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        problems = self._problems(feedback_fn)
        if constants.VERIFY_NPLUSONE_MEM not in self.op.skip_checks:
            feedback_fn("* Verifying N+1 Memory redundancy")
            problems += self._verify_n_plus_one()
        for problem in problems:
            feedback_fn(self._format(problem))
        return not problems

    def _format(self, problem: str) -> str:
        return format_verify_problem(problem, self.op.error_codes)

    def _verify_n_plus_one(self) -> list[str]:
        """Ganeti's N+1 memory check: each node can take the instances it is secondary
        for should one primary fail (their minmem, auto_balance ones).  Only mirrored
        disk templates have secondaries; without any, no node is asked."""
        cluster = self.cfg.get_cluster_info()
        needed: dict[str, dict[str, int]] = {}  # secondary uuid -> primary uuid -> MiB
        for inst in self.cfg.get_all_instances_info().values():
            bep = cluster.fill_beparams(inst)
            if not bep.get("auto_balance", True):
                continue
            for snode in inst.secondary_nodes:
                per_primary = needed.setdefault(snode, {})
                per_primary[inst.primary_node] = per_primary.get(inst.primary_node, 0) + \
                    int(bep.get("minmem", 0))
        nodes = [n for n in self.group_nodes if n.uuid in needed and not n.offline]
        if not nodes or self.rpc is None:
            return []
        answers = self.rpc.call_node_info([n.name for n in nodes])
        problems: list[str] = []
        for node in nodes:
            res = answers[node.name]
            if res.fail_msg or not res.payload:
                continue  # the version check reports nodes that do not answer
            free = int(res.payload["memory_free"])
            for primary, mem in sorted(needed[node.uuid].items()):
                if mem > free:
                    pnode = self.cfg.get_node_info(primary)
                    problems.append(verify_problem(
                        constants.CV_ENODEN1, node.name,
                        f"not enough memory to accommodate instance failovers should node"
                        f" {pnode.name if pnode else primary} fail ({mem} MiB needed,"
                        f" {free} MiB free)"))
        return problems

    def _problems(self, feedback_fn: FeedbackFn) -> list[str]:
        nodes = [n.name for n in self.group_nodes]
        problems: list[str] = []
        if self.rpc is None:
            problems.append(verify_problem(constants.CV_ECLUSTERCFG, "",
                                           "RPC layer unavailable: nodes not checked"))
            return problems
        results = self.rpc.call_version(nodes)
        for name in nodes:
            res = results[name]
            if res.offline:
                feedback_fn(f"Node {name} is offline, skipped")
            elif res.fail_msg:
                problems.append(verify_problem(constants.CV_ENODERPC, name, res.fail_msg))
            elif res.payload != constants.PROTOCOL_VERSION:
                problems.append(verify_problem(
                    constants.CV_ENODEVERSION, name, f"protocol version {res.payload},"
                    f" master has {constants.PROTOCOL_VERSION}"))
        version_ok = not problems
        problems.extend(self._verify_orphan_disk_files(results))
        problems += self._stale_export_leftovers(
            [n for n in nodes if not results[n].offline and not results[n].fail_msg])
        if version_ok:
            feedback_fn(f"All {len(nodes)} nodes answer with protocol version"
                        f" {constants.PROTOCOL_VERSION}")
        problems += config_distribution_lag(self.context, self.group_nodes, feedback_fn)
        return problems

    def _verify_orphan_disk_files(self, answered: dict[str, Any]) -> list[str]:
        """Disk files no instance in the config owns (e.g. left by a failed create).

        Consistent because disks are created and removed under exclusive node
        locks, and this LU holds every node lock shared.
        """
        owned: dict[str, list[str]] = {}
        for inst in self.cfg.snapshot().get_all_instances_info().values():
            for disk in inst.disks:
                if disk.dev_type == constants.DT_FILE and len(disk.logical_id) == 2:
                    owned.setdefault(inst.primary_node, []).append(str(disk.logical_id[1]))
        problems: list[str] = []
        for node in self.group_nodes:
            res = answered.get(node.name)
            if node.offline or res is None or res.fail_msg:
                continue  # already reported (or skipped) above
            found = self.rpc.call_file_storage_orphans(node.name,
                                                       sorted(owned.get(node.uuid, [])))
            if found.fail_msg:
                problems.append(verify_problem(
                    constants.CV_ENODERPC, node.name,
                    f"cannot check for orphan disk files: {found.fail_msg}"))
                continue
            problems.extend(verify_problem(
                constants.CV_ENODEORPHANFILE, node.name,
                f"orphan disk file {path} (no instance in the configuration owns it)")
                for path in found.payload)
        return problems

    def _stale_export_leftovers(self, nodes: list[str]) -> list[str]:
        """Staging dirs, trash and journals no running export uses, per node."""
        exporting = {name.split("/", 1)[1] for name, mode, _owners, _pending
                     in self.glm.query_locks()
                     if name.startswith("instance/") and mode == locking.EXCLUSIVE}
        problems: list[str] = []
        for name, res in sorted(self.rpc.call_export_leftovers(nodes).items()):
            if res.fail_msg:
                problems.append(verify_problem(
                    constants.CV_ENODERPC, name, f"cannot list export leftovers: {res.fail_msg}"))
                continue
            stale = [item for item in res.payload or []
                     if not (item.startswith(".staging/") and item[9:] in exporting)]
            if stale:
                problems.append(verify_problem(
                    constants.CV_ENODEEXPORTLEFTOVER, name,
                    f"stale export leftovers (removed by the watcher): {', '.join(stale)}"))
        return problems


# How long verify lets the master candidates catch up before it calls them lagging
VERIFY_FLUSH_TIMEOUT = 5.0


def config_distribution_lag(context: Any, nodes: list[objects.Node],
                            feedback_fn: FeedbackFn) -> list[str]:
    """Master candidates among ``nodes`` whose configuration is behind the master's.

    Uploads run in the background (ganeti.config_distribution), so verify
    first gives them a short flush; what is still behind is a problem,
    reported with the serials and the last error.
    """
    distribution = getattr(context, "distribution", None)
    master = context.cfg.get_master_node()
    candidates = [n.name for n in nodes
                  if n.master_candidate and not n.offline and n.uuid != master]
    if distribution is None or not candidates:
        return []
    missed = distribution.flush(candidates, VERIFY_FLUSH_TIMEOUT)
    if not missed:
        feedback_fn(f"All {len(candidates)} master candidates of the group have the"
                    f" configuration (serial {context.cfg.get_serial()} or newer)")
        return []
    by_node = {s.node: s for s in distribution.status()}
    problems = []
    for name, reason in sorted(missed.items()):
        state = by_node.get(name)
        if state is None:
            problems.append(f"node {name}: configuration not distributed: {reason}")
            continue
        has = ("nothing since the master started" if state.shipped_serial is None
               else f"serial {state.shipped_serial}")
        success = ("never" if state.last_success is None
                   else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.last_success)))
        problems.append(f"node {name}: configuration lags {state.lag} serial(s) behind the"
                        f" master (has {has}, master {state.master_serial}; last success:"
                        f" {success}; last error: {state.last_error or reason})")
    return problems


class LUClusterDestroy(LogicalUnit):
    """Dismantle a cluster reduced to its master: set its files aside.

    The configuration and crypto material are renamed (not deleted), so an
    accidental destroy can be undone by hand; the CLI then stops the daemons.
    As in Ganeti, its post hooks run on the master during Exec, while the
    cluster still exists.
    """

    HPATH = "cluster-destroy"
    HTYPE = constants.HTYPE_CLUSTER
    REQ_BGL = True

    def BuildHooksEnv(self) -> dict[str, Any]:
        return {"OP_TARGET": self.cfg.get_cluster_info().cluster_name}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        return [], []

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        master = self.cfg.get_master_node()
        others = sorted(n.name for n in self.cfg.snapshot().get_all_nodes_info().values()
                        if n.uuid != master)
        if others:
            raise errors.OpPrereqError(
                f"There are still {len(others)} node(s) in this cluster ({', '.join(others)});"
                " remove them first", errors.ECODE_INVAL)
        instances = self.cfg.get_instance_list()
        if instances:
            raise errors.OpPrereqError(
                f"There are still {len(instances)} instance(s) in this cluster;"
                " remove them first", errors.ECODE_INVAL)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        run_post_hook(self, self.cfg.get_master_node_name())
        paths = self.context.paths
        suffix = time.strftime(".destroyed-%Y%m%d%H%M%S")
        self.cfg.compact()  # the set-aside file alone holds everything
        for path in (paths.cluster_conf_file, config_journal.journal_path(paths.cluster_conf_file),
                     paths.cluster_domain_secret_file, paths.crypto_dir):
            if path.exists():
                os.rename(path, path.with_name(path.name + suffix))
        feedback_fn(f"Cluster files set aside with suffix {suffix}")
        return self.cfg.get_master_node_name()


class LUClusterRenewCrypto(NoHooksLU):
    """Replace the cluster domain secret and/or rapi.pem (``gnt-cluster renew-crypto``).

    Two clusters exchange instances only when they share this secret.  It lives
    on the master alone, the only node that signs or verifies inter-cluster
    data, so nothing is distributed; an export prepared with the old secret
    fails its handshake at the destination and is simply prepared again.  The
    RAPI certificate lives on the master too; the daemon serves new
    connections with the new one (it watches the file).
    """

    REQ_BGL = False
    op: opcodes.OpClusterRenewCrypto

    def CheckArguments(self) -> None:
        secret_sources = self.op.new_cluster_domain_secret + \
            (self.op.cluster_domain_secret is not None)
        if secret_sources > 1 or (secret_sources == 0 and not self.op.new_rapi_certificate):
            raise errors.OpPrereqError(
                "Give exactly one of new_cluster_domain_secret and cluster_domain_secret,"
                " and/or new_rapi_certificate", errors.ECODE_INVAL)

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        written = []
        if self.op.new_rapi_certificate:
            written.append(self._new_rapi_certificate(feedback_fn))
        if self.op.new_cluster_domain_secret or self.op.cluster_domain_secret is not None:
            secret = self.op.cluster_domain_secret or crypto.generate_cluster_domain_secret()
            path = self.context.paths.cluster_domain_secret_file
            remote.write_domain_secret(path, secret)
            feedback_fn(f"Cluster domain secret written to {path}")
            written.append(str(path))
        return written[-1]

    def _new_rapi_certificate(self, feedback_fn: FeedbackFn) -> str:
        cfg = self.context.cfg
        cluster = cfg.get_cluster_info()
        master = cfg.get_node_info_by_name(cfg.get_master_node_name())
        names = [cfg.get_master_node_name(), cluster.cluster_name]
        ips = [ip for ip in (master.primary_ip if master else None, cluster.master_ip) if ip]
        bootstrap.write_rapi_certificate(self.context.paths, names, ips)
        path = self.context.paths.rapi_cert
        feedback_fn(f"RAPI certificate written to {path}")
        return str(path)
