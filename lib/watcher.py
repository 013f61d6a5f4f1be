"""ganeti-watcher: the cron job that puts a node back into working order.

Run on every node (e.g. every 5 minutes).  On each node it restarts a dead
``ganeti-noded`` and removes expired crypto material.  On the master node it
also restarts ``ganeti-masterd`` and ``ganeti-rapi`` (on the address it
listened on last), archives finished jobs older than six hours
(they would otherwise stay in the master's memory) and then, through ordinary
jobs, removes leftovers of interrupted work (OpClusterCleanupLeftovers:
snapshots, staging dirs, transfers no running job uses) and starts instances
whose admin state is up but which do not run (OpInstanceStartup), which is
how an instance stopped by an export whose master crashed comes back.  Every
action and problem is printed, one per line; exit code 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID

from ganeti import (
    config_journal,
    constants,
    crypto,
    daemon,
    errors,
    luxi,
    opcodes,
    pathutils,
    query,
)
from ganeti.backend import x509
from ganeti.fileutils import atomic_write

PROG = "ganeti-watcher"
STATE_FILE = "watcher.data"
# give up restarting an instance after this many failed attempts (reset once it runs)
MAX_RESTARTS = 5
DEFAULT_JOB_TIMEOUT = 300.0
# finished jobs older than this are archived (the queue keeps live ones in memory)
DEFAULT_ARCHIVE_AGE = 6 * 3600.0
ARCHIVE_TIMEOUT = 30.0
DAEMON_START_TIMEOUT = 60.0
_FINAL = frozenset(constants.JOBS_FINALIZED)


@dataclass
class Report:
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def act(self, text: str) -> None:
        self.actions.append(text)

    def fail(self, text: str) -> None:
        self.problems.append(text)


@dataclass(frozen=True)
class NodeIdentity:
    """Who this node is, from its own certificate and its copy of the config."""

    name: str
    address: str
    port: int
    is_master: bool


def own_identity(paths: pathutils.Paths) -> NodeIdentity | None:
    try:
        cert = crypto.load_certificate_file(paths.node_cert_file)
        config = config_journal.load(paths.cluster_conf_file)[0]
    except (OSError, ValueError, errors.GenericError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    name = str(names[0].value)
    nodes = config.get("nodes") or {}
    cluster = config.get("cluster") or {}
    for uuid, node in nodes.items():
        if isinstance(node, dict) and node.get("name") == name:
            port = node.get("port") or cluster.get("noded_port") or \
                constants.DEFAULT_NODED_PORT
            return NodeIdentity(name, str(node.get("primary_ip") or "0.0.0.0"), int(port),
                                cluster.get("master_node") == uuid)
    return None


def _daemon_program(name: str) -> list[str]:
    """The daemon next to this source tree, else the installed one."""
    local = Path(__file__).resolve().parents[1] / "daemons" / name
    if local.is_file():
        return [sys.executable, str(local)]
    found = shutil.which(name)
    return [found] if found else [name]


def daemon_alive(paths: pathutils.Paths, name: str) -> bool:
    pid = daemon.read_pid(paths.pid_file(name))
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a killed daemon nobody reaped yet (a zombie) is dead too
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_daemon(paths: pathutils.Paths, name: str, extra: list[str],
                  report: Report) -> bool:
    root = ["--root", str(paths.root)] if os.environ.get(pathutils.ROOT_ENV) else []
    argv = [*_daemon_program(name), *extra, *root]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=DAEMON_START_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        report.fail(f"cannot start {name}: {err}")
        return False
    if proc.returncode != 0:
        report.fail(f"cannot start {name}: {(proc.stderr or proc.stdout).strip()}")
        return False
    report.act(f"restarted {name}")
    return True


def restart_daemons(paths: pathutils.Paths, ident: NodeIdentity, report: Report) -> None:
    if not daemon_alive(paths, constants.NODED):
        _start_daemon(paths, constants.NODED,
                      ["--bind", ident.address, "--port", str(ident.port)], report)
    if ident.is_master and not daemon_alive(paths, constants.MASTERD):
        _start_daemon(paths, constants.MASTERD, [], report)
    if ident.is_master and not daemon_alive(paths, constants.RAPI):
        # where it listened last (a local cluster's port), else its defaults
        recorded = daemon.recorded_address(paths.address_file(constants.RAPI))
        where = ["--bind", recorded[0], "--port", str(recorded[1])] if recorded else []
        _start_daemon(paths, constants.RAPI, where, report)


def clean_expired_crypto(paths: pathutils.Paths, report: Report) -> None:
    """Expired per-transfer keys of remote exports (the x509-cleaner's rule)."""
    try:
        removed = x509.remove_expired(paths)
    except OSError as err:
        report.fail(f"cannot clean expired crypto material: {err}")
        return
    for name in removed:
        report.act(f"removed expired crypto material {name}")


# --- master part: jobs ------------------------------------------------------------


def wait_job(cl: luxi.Client, job_id: int, timeout: float) -> tuple[str, Any]:
    """(final status, opresult) or ("timeout", None); polls the queue, no long waits."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        (status, result), = cl.query_jobs([job_id], ["status", "opresult"])
        if status in _FINAL or time.monotonic() >= deadline:
            return (status if status in _FINAL else "timeout"), result
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _busy_instances(cl: luxi.Client) -> set[str]:
    """Instances named in the summary of an unfinished job (e.g. a running export)."""
    busy: set[str] = set()
    for status, summaries in cl.query_jobs(None, ["status", "summary"]):
        if status in _FINAL:
            continue
        for text in summaries or []:
            if isinstance(text, str) and text.endswith(")") and "(" in text:
                busy.add(text[text.index("(") + 1:-1])
    return busy


def _load_state(paths: pathutils.Paths) -> dict[str, Any]:
    try:
        data = json.loads((paths.data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(paths: pathutils.Paths, state: dict[str, Any]) -> None:
    atomic_write(paths.data_dir / STATE_FILE, json.dumps(state, sort_keys=True), 0o600)


def cleanup_leftovers(cl: luxi.Client, timeout: float, report: Report) -> None:
    job_id = cl.submit_job([opcodes.OpClusterCleanupLeftovers.create()])
    status, result = wait_job(cl, job_id, timeout)
    if status != constants.OP_STATUS_SUCCESS:
        report.fail(f"leftover cleanup job {job_id} ended {status}: {result}")
        return
    summary = result[0] if isinstance(result, list) and result else {}
    for node, names in sorted((summary.get("staging") or {}).items()):
        report.act(f"removed export leftovers on {node}: {', '.join(names)}")
    for node, ids in sorted((summary.get("transfers") or {}).items()):
        report.act(f"forgot {len(ids)} stale transfer(s) on {node}")
    for snap in summary.get("snapshots") or []:
        report.act(f"removed leftover snapshot {snap}")
    busy = summary.get("busy_instances") or []
    if busy:
        report.act(f"skipped busy instance(s): {', '.join(busy)}")


def restart_instances(cl: luxi.Client, paths: pathutils.Paths, timeout: float,
                      report: Report) -> None:
    result = cl.query("instance", ["name", "admin_state", "oper_state"])
    # only a definite "not running" counts (an unreachable node is no reason to start)
    down = [row[0][1] for row in result["data"]
            if row[1][1] == constants.ADMINST_UP and row[2] == [query.RS_NORMAL, False]]
    state = _load_state(paths)
    attempts: dict[str, int] = state.get("restarts", {})
    busy = _busy_instances(cl) if down else set()
    jobs: list[tuple[str, int]] = []
    for name in sorted(down):
        if name in busy:
            report.act(f"instance {name} is down but has a running job; not restarted")
        elif attempts.get(name, 0) >= MAX_RESTARTS:
            report.fail(f"instance {name} is down; gave up after {MAX_RESTARTS} restarts")
        else:
            attempts[name] = attempts.get(name, 0) + 1
            jobs.append((name, cl.submit_job(
                [opcodes.OpInstanceStartup.create(instance_name=name)])))
    for name, job_id in jobs:
        status, res = wait_job(cl, job_id, timeout)
        if status == constants.OP_STATUS_SUCCESS:
            attempts.pop(name, None)
            report.act(f"restarted instance {name} (job {job_id})")
        else:
            report.fail(f"restarting instance {name} failed (job {job_id}, {status}): {res}")
    running = {row[0][1] for row in result["data"] if row[2][1] is True}
    state["restarts"] = {k: v for k, v in attempts.items() if k not in running}
    _save_state(paths, state)


def archive_old_jobs(cl: luxi.Client, age: float, report: Report) -> None:
    archived, left = cl.auto_archive_jobs(age, ARCHIVE_TIMEOUT)
    if archived:
        report.act(f"archived {archived} finished job(s) older than {age:g}s")
    if left:
        report.act(f"{left} job(s) not yet checked for archiving (next run)")


def run(paths: pathutils.Paths, job_timeout: float = DEFAULT_JOB_TIMEOUT,
        connect: Callable[[], luxi.Client] | None = None,
        archive_age: float = DEFAULT_ARCHIVE_AGE) -> Report:
    report = Report()
    ident = own_identity(paths)
    if ident is None:
        report.fail(f"not a cluster node (no usable {paths.node_cert_file.name} and config)")
        return report
    restart_daemons(paths, ident, report)
    clean_expired_crypto(paths, report)
    if not ident.is_master:
        return report
    try:
        with (connect or (lambda: luxi.Client(str(paths.master_socket))))() as cl:
            archive_old_jobs(cl, archive_age, report)
            cleanup_leftovers(cl, job_timeout, report)
            restart_instances(cl, paths, job_timeout, report)
    except errors.GenericError as err:
        report.fail(f"master jobs: {errors.format_error(err)}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--root", metavar="DIR",
                        help=f"Run with every path under DIR (sets {pathutils.ROOT_ENV})")
    parser.add_argument("--job-timeout", type=float, default=DEFAULT_JOB_TIMEOUT,
                        metavar="SECONDS", help="How long to wait for each job it submits")
    parser.add_argument("--job-age", type=float, default=DEFAULT_ARCHIVE_AGE,
                        metavar="SECONDS",
                        help="Archive finished jobs older than this (default: 6 hours)")
    opts = parser.parse_args(argv)
    if opts.job_timeout <= 0:
        parser.error("--job-timeout must be positive")
    if opts.job_age < 0:
        parser.error("--job-age must not be negative")
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    report = run(pathutils.current(), opts.job_timeout, archive_age=opts.job_age)
    for line in report.actions:
        print(f"{PROG}: {line}")
    for line in report.problems:
        print(f"{PROG}: ERROR: {line}", file=sys.stderr)
    if not report.actions and not report.problems:
        print(f"{PROG}: nothing to do")
    return 1 if report.problems else 0
