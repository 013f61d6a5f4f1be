"""Every Ganeti 3.0.2 gnt-* command that has a counterpart here, run against a local cluster.

Each command runs through Ganeti's own script (the oracle), pointed at the
cluster only through Ganeti's variables.  Commands that should work are
checked against what our own clients show (names, states, values); commands
needing a feature we lack must fail with a clear error naming it, not a
traceback.  The other 3.0 areas (LUXI details, opcode fields, hooks, export
format, query language) have their own test_compat_*.py files.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.cluster import E2ECluster, output
from support.ganeti_oracle import Ganeti3

import ganeti
from ganeti import constants, opcodes

RUNNING = "sw-run"      # file disk on node2, running
STOPPED = "sw-down"     # file disk on node3, stopped (exported to node1 by the fixture)


@pytest.fixture(scope="module")
def swept(cluster: E2ECluster) -> Iterator[E2ECluster]:
    """The cluster with one running and one stopped instance, and an export."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "-H", "process:write_interval_ms=5,blocks=64", RUNNING)
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node3", "--disk", "0:size=4M",
                "--no-start", STOPPED)
    cluster.gnt("gnt-backup", "export", "-n", "node1", STOPPED)
    yield cluster


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A non-zero exit with a message naming what is missing, and no traceback."""
    text = output(proc)
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def _job_status(cluster: E2ECluster) -> dict[str, tuple[str, str]]:
    """job id -> (status, summary) as our own gnt-job list shows them."""
    listing = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id,status,summary").stdout
    return {row[0]: (row[1], row[2]) for row in _rows(listing)}


def _last_job(cluster: E2ECluster, summary: str) -> str:
    ids = [job_id for job_id, (_, summ) in _job_status(cluster).items() if summ == summary]
    assert ids, f"no job {summary} in {_job_status(cluster)}"
    return ids[-1]


# --- commands that work --------------------------------------------------------------

Check = Callable[[Ganeti3, E2ECluster], None]


@dataclass(frozen=True)
class Case:
    command: str
    check: Check


def _cluster_version(g: Ganeti3, cluster: E2ECluster) -> None:
    text = _ok(g.run(cluster, "gnt-cluster", "version"))
    assert f"Software version: {ganeti.__version__}" in text.splitlines()
    assert f"Internode protocol: {constants.PROTOCOL_VERSION}" in text.splitlines()


def _cluster_info(g: Ganeti3, cluster: E2ECluster) -> None:
    text = _ok(g.run(cluster, "gnt-cluster", "info"))
    ours = cluster.gnt("gnt-cluster", "info").stdout
    name = re.search(r"^Cluster name: (\S+)$", ours, re.M)
    master = re.search(r"^Master node: (\S+)$", ours, re.M)
    assert name is not None and master is not None, ours
    assert f"Cluster name: {name.group(1)}" in text
    assert f"Master node: {master.group(1)}" in text
    assert "Default hypervisor: process" in text


def _master_ping(g: Ganeti3, cluster: E2ECluster) -> None:
    _ok(g.run(cluster, "gnt-cluster", "master-ping"))


def _cluster_verify(g: Ganeti3, cluster: E2ECluster) -> None:
    text = _ok(g.run(cluster, "gnt-cluster", "verify"))
    assert "All 3 nodes answer with protocol version" in text
    # it followed the group job OP_CLUSTER_VERIFY submitted, which succeeded
    submitted = re.search(r"Submitted jobs (\d+)", text)
    assert submitted is not None, text
    assert _job_status(cluster)[submitted.group(1)] == (
        "success", "CLUSTER_VERIFY_GROUP(default)")


def _queue_info(g: Ganeti3, cluster: E2ECluster) -> None:
    assert _ok(g.run(cluster, "gnt-cluster", "queue", "info")).strip() == \
        "The drain flag is unset"
    _ok(g.run(cluster, "gnt-cluster", "queue", "drain"))
    try:
        assert _ok(g.run(cluster, "gnt-cluster", "queue", "info")).strip() == \
            "The drain flag is set"
        _refused(cluster.gnt("gnt-debug", "delay", "0", ok=False), "drain")
    finally:
        _ok(g.run(cluster, "gnt-cluster", "queue", "undrain"))
    cluster.gnt("gnt-debug", "delay", "0")


def _watcher_info(g: Ganeti3, cluster: E2ECluster) -> None:
    assert _ok(g.run(cluster, "gnt-cluster", "watcher", "info")).strip() == \
        "The watcher is not paused."


def _node_list_fields(g: Ganeti3, cluster: E2ECluster) -> None:
    names = {row[0] for row in _rows(_ok(g.run(cluster, "gnt-node", "list-fields",
                                                "--no-headers")))}
    assert {"name", "pinst_cnt", "pip", "master_candidate", "offline"} <= names


def _node_list(g: Ganeti3, cluster: E2ECluster) -> None:
    fields = "name,pinst_cnt,pip,offline"
    theirs = _ok(g.run(cluster, "gnt-node", "list", "--no-headers", "-o", fields))
    ours = cluster.gnt("gnt-node", "list", "--no-headers", "-o", fields).stdout
    assert _rows(theirs) == _rows(ours)
    assert [row[0] for row in _rows(theirs)] == ["node1", "node2", "node3"]
    assert int(_rows(theirs)[1][1]) >= 1      # node2 holds the running instance


def _node_list_default(g: Ganeti3, cluster: E2ECluster) -> None:
    # 3.0's default fields include the live ones (memory, disk) the nodes report
    rows = _rows(_ok(g.run(cluster, "gnt-node", "list", "--no-headers")))
    ours = _rows(cluster.gnt("gnt-node", "list", "--no-headers", "-o",
                             "name,pinst_cnt").stdout)
    assert [[row[0], row[6]] for row in rows] == ours
    assert all(len(row) == 8 and row[7] == "0" for row in rows), rows


def _node_info(g: Ganeti3, cluster: E2ECluster) -> None:
    text = _ok(g.run(cluster, "gnt-node", "info", "node2"))
    ours = cluster.gnt("gnt-node", "info", "node2").stdout
    pip = re.search(r"^  pip: (\S+)$", ours, re.M)
    assert pip is not None, ours
    assert "- Node name: node2" in text
    assert f"primary ip: {pip.group(1)}" in text
    assert "master candidate: True" in text and "offline: False" in text
    assert f"    - {RUNNING}" in text      # primary for instances


def _instance_list(g: Ganeti3, cluster: E2ECluster) -> None:
    fields = "name,pnode,status,admin_state,disk_template"
    theirs = _rows(_ok(g.run(cluster, "gnt-instance", "list", "--no-headers", "-o", fields)))
    ours = _rows(cluster.gnt("gnt-instance", "list", "--no-headers", "-o", fields).stdout)
    assert theirs == ours
    assert [RUNNING, "node2", "running", "up", "file"] in theirs
    assert [STOPPED, "node3", "ADMIN_down", "down", "file"] in theirs
    # a stopped instance's memory is unavailable: "-", as Ganeti shows it
    memory = _rows(_ok(g.run(cluster, "gnt-instance", "list", "--no-headers", "-o",
                             "name,oper_ram", STOPPED)))
    assert memory == [[STOPPED, "-"]]


def _instance_list_fields(g: Ganeti3, cluster: E2ECluster) -> None:
    names = {row[0] for row in _rows(_ok(g.run(cluster, "gnt-instance", "list-fields",
                                                "--no-headers")))}
    assert {"name", "status", "pnode", "oper_ram", "admin_state"} <= names


def _instance_info(g: Ganeti3, cluster: E2ECluster) -> None:
    text = _ok(g.run(cluster, "gnt-instance", "info", RUNNING, STOPPED))
    conf = cluster.instance_conf(RUNNING)
    assert conf is not None
    assert f"Instance name: {RUNNING}" in text
    assert "State: configured to be up, actual state is up" in text
    assert "State: configured to be down, actual state is down" in text
    assert "- primary: node2" in text and "- primary: node3" in text
    assert f"UUID: {conf['disks'][0]['uuid']}" in text
    assert f"MAC: {conf['nics'][0]['mac']}" in text
    assert "write_interval_ms: 5" in text and "blocks: 64" in text
    # our own client shows the same states
    ours = cluster.gnt("gnt-instance", "info", RUNNING).stdout
    assert "State: configured to be up, actual state is up" in ours
    static = _ok(g.run(cluster, "gnt-instance", "info", "--static", RUNNING))
    assert "State: configured to be up\n" in static


def _add_start_stop_remove(g: Ganeti3, cluster: E2ECluster) -> None:
    for template, extra in (("file", ["--disk", "0:size=4M"]), ("diskless", [])):
        name = f"sw-{template}"
        _ok(g.run(cluster, "gnt-instance", "add", "-t", template, "-n", "node2", *extra,
                  "--no-name-check", "--no-ip-check", "--no-install", name))
        conf = cluster.instance_conf(name)
        assert conf is not None and conf["disk_template"] == template
        assert conf["admin_state"] == "up"
        for command in ("shutdown", "startup", "reboot"):
            _ok(g.run(cluster, "gnt-instance", command, name))
        listing = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name,status")
        assert [name, "running"] in _rows(listing.stdout)
        _ok(g.run(cluster, "gnt-instance", "remove", "-f", name))
        assert cluster.instance_conf(name) is None


def _instance_modify(g: Ganeti3, cluster: E2ECluster) -> None:
    text = _ok(g.run(cluster, "gnt-instance", "modify", "-B", "vcpus=2", STOPPED))
    assert f"Modified instance {STOPPED}" in text and " - be/vcpus -> 2" in text
    ours = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name,be/vcpus",
                       STOPPED).stdout
    assert _rows(ours) == [[STOPPED, "2"]]
    cluster.gnt("gnt-instance", "modify", "-B", "vcpus=default", STOPPED)


def _node_modify(g: Ganeti3, cluster: E2ECluster) -> None:
    for flag, value in (("yes", "Y"), ("no", "N")):
        text = _ok(g.run(cluster, "gnt-node", "modify", "-D", flag, "node3"))
        assert f" - drained -> {flag == 'yes'}" in text
        ours = cluster.gnt("gnt-node", "list", "--no-headers", "-o", "name,drained",
                           "node3").stdout
        assert _rows(ours) == [["node3", value]]


def _job_list(g: Ganeti3, cluster: E2ECluster) -> None:
    theirs = _rows(_ok(g.run(cluster, "gnt-job", "list", "--no-headers", "-o",
                             "id,status,summary")))
    ours = {job_id: status for job_id, status in _job_status(cluster).items()}
    assert theirs and {row[0]: (row[1], row[2]) for row in theirs}.items() <= ours.items()
    assert ["success", f"INSTANCE_CREATE({RUNNING})"] in [row[1:] for row in theirs]


def _job_info_and_watch(g: Ganeti3, cluster: E2ECluster) -> None:
    job_id = _last_job(cluster, f"INSTANCE_CREATE({RUNNING})")
    info = _ok(g.run(cluster, "gnt-job", "info", job_id))
    assert f"Job ID: {job_id}" in info
    assert "OP_ID: OP_INSTANCE_CREATE" in info and f"instance_name: {RUNNING}" in info
    assert "Status: success" in info
    watched = _ok(g.run(cluster, "gnt-job", "watch", job_id))
    assert f"Output from job {job_id} follows" in watched
    assert f"Instance {RUNNING} added to the configuration" in watched


def _job_cancel_and_change_priority(g: Ganeti3, cluster: E2ECluster) -> None:
    # the blocker, a shutdown of the stopped instance, runs holding the instance's lock
    # until the test releases node3's hypervisor lock; the second job waits for it
    with cluster.holding_hypervisor_lock("node3", STOPPED), cluster.luxi_client() as cl:
        blocker = cl.submit_job([opcodes.OpInstanceShutdown.create(instance_name=STOPPED)])
        cluster.wait_job_status(blocker, {constants.OP_STATUS_RUNNING})
        waiting = cl.submit_job([opcodes.OpTestDelay.create(duration=0,
                                                            lock_instances=[STOPPED])])
        cluster.wait_job_status(waiting, {constants.OP_STATUS_WAITING})
        changed = _ok(g.run(cluster, "gnt-job", "change-priority", "--priority", "high",
                            str(waiting)))
        assert f"job {waiting} changed to {constants.OP_PRIO_HIGH}" in changed
        assert f"Job {waiting} will be canceled" in _ok(g.run(cluster, "gnt-job", "cancel",
                                                              str(waiting)))
        assert _job_status(cluster)[str(blocker)][0] == "running"
    cluster.gnt("gnt-job", "watch", str(blocker))
    cluster.gnt("gnt-job", "watch", str(waiting), ok=False)
    assert _job_status(cluster)[str(waiting)][0] == "canceled"
    assert _job_status(cluster)[str(blocker)][0] == "success"


def _job_archive(g: Ganeti3, cluster: E2ECluster) -> None:
    job_id = cluster.gnt("gnt-debug", "delay", "--submit", "0").stdout.split()[-1]
    cluster.gnt("gnt-job", "watch", job_id)
    _ok(g.run(cluster, "gnt-job", "archive", job_id))
    assert job_id not in _job_status(cluster)
    auto = _ok(g.run(cluster, "gnt-job", "autoarchive", "1d"))
    assert re.match(r"Archived \d+ jobs, \d+ unchecked left", auto.strip()), auto


def _backup_list(g: Ganeti3, cluster: E2ECluster) -> None:
    theirs = _rows(_ok(g.run(cluster, "gnt-backup", "list", "--no-headers")))
    ours = _rows(cluster.gnt("gnt-backup", "list", "--no-headers", "-o",
                             "node,export").stdout)
    assert ["node1", STOPPED] in theirs
    assert sorted(theirs) == sorted(ours)
    fields = {row[0] for row in _rows(_ok(g.run(cluster, "gnt-backup", "list-fields",
                                                 "--no-headers")))}
    assert {"node", "export"} <= fields


def _backup_export_import_remove(g: Ganeti3, cluster: E2ECluster) -> None:
    # 3.0's gzip-fast is our gzip stream
    _ok(g.run(cluster, "gnt-backup", "export", "-n", "node2", "--transport-compression",
              "gzip-fast", STOPPED, timeout=300))
    job_id = _last_job(cluster, f"BACKUP_EXPORT({STOPPED})")
    assert "compress: gzip\n" in _ok(g.run(cluster, "gnt-job", "info", job_id))
    _ok(g.run(cluster, "gnt-backup", "import", "-n", "node1", "--src-node", "node2",
              "--src-dir", STOPPED, "--no-name-check", "--no-ip-check", "sw-copy",
              timeout=300))
    copy = cluster.instance_conf("sw-copy")
    assert copy is not None and copy["disk_template"] == "file"
    assert [d["size"] for d in copy["disks"]] == [4]
    _ok(g.run(cluster, "gnt-instance", "remove", "-f", "sw-copy"))
    _ok(g.run(cluster, "gnt-backup", "remove", STOPPED))
    listing = cluster.gnt("gnt-backup", "list", "--no-headers", "-o", "node,export").stdout
    assert STOPPED not in listing.split()
    cluster.gnt("gnt-backup", "export", "-n", "node1", STOPPED)   # as the fixture left it


def _backup_export_options(g: Ganeti3, cluster: E2ECluster) -> None:
    # --long-sleep: the running instance is stopped for the copy and started again
    _ok(g.run(cluster, "gnt-backup", "export", "-n", "node3", "--long-sleep", RUNNING,
              timeout=300))
    listing = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name,status",
                          RUNNING).stdout
    assert _rows(listing) == [[RUNNING, "running"]]
    # --remove-instance: exported, then removed
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "sw-gone")
    _ok(g.run(cluster, "gnt-backup", "export", "-n", "node3", "--remove-instance",
              "sw-gone", timeout=300))
    assert cluster.instance_conf("sw-gone") is None
    exports = _rows(cluster.gnt("gnt-backup", "list", "--no-headers", "-o",
                                "node,export").stdout)
    assert ["node3", "sw-gone"] in exports and ["node3", RUNNING] in exports
    for name in ("sw-gone", RUNNING):
        _ok(g.run(cluster, "gnt-backup", "remove", name))


def _debug_delay(g: Ganeti3, cluster: E2ECluster) -> None:
    _ok(g.run(cluster, "gnt-debug", "delay", "-n", "node3", "0.1"))
    assert _job_status(cluster)[_last_job(cluster, "TEST_DELAY(0.1)")][0] == "success"


def _debug_locks(g: Ganeti3, cluster: E2ECluster) -> None:
    names = {row[0] for row in _rows(_ok(g.run(cluster, "gnt-debug", "locks",
                                                "--no-headers")))}
    assert {"cluster/BGL", f"instance/{RUNNING}", "node/node2"} <= names


WORKS = [
    Case("gnt-cluster version", _cluster_version),
    Case("gnt-cluster info", _cluster_info),
    Case("gnt-cluster master-ping", _master_ping),
    Case("gnt-cluster verify", _cluster_verify),
    Case("gnt-cluster queue info/drain/undrain", _queue_info),
    Case("gnt-cluster watcher info", _watcher_info),
    Case("gnt-node list-fields", _node_list_fields),
    Case("gnt-node list -o", _node_list),
    Case("gnt-node list", _node_list_default),
    Case("gnt-node info", _node_info),
    Case("gnt-instance list", _instance_list),
    Case("gnt-instance list-fields", _instance_list_fields),
    Case("gnt-instance info", _instance_info),
    Case("gnt-instance add/shutdown/startup/reboot/remove", _add_start_stop_remove),
    Case("gnt-instance modify -B", _instance_modify),
    Case("gnt-node modify -D", _node_modify),
    Case("gnt-job list", _job_list),
    Case("gnt-job info/watch", _job_info_and_watch),
    Case("gnt-job change-priority/cancel", _job_cancel_and_change_priority),
    Case("gnt-job archive/autoarchive", _job_archive),
    Case("gnt-backup list/list-fields", _backup_list),
    Case("gnt-backup export/import/remove", _backup_export_import_remove),
    Case("gnt-backup export --long-sleep/--remove-instance", _backup_export_options),
    Case("gnt-debug delay", _debug_delay),
    Case("gnt-debug locks", _debug_locks),
]


@pytest.mark.parametrize("case", WORKS, ids=[c.command for c in WORKS])
def test_3_0_command_works(ganeti3: Ganeti3, swept: E2ECluster, case: Case) -> None:
    case.check(ganeti3, swept)


def test_3_0s_verify_fails_on_a_problem_and_names_it(ganeti3: Ganeti3,
                                                     swept: E2ECluster) -> None:
    stray = swept.node("node3").paths.file_storage_dir / "ghost.example.com" / "x.disk0"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\0" * 512)
    try:
        proc = ganeti3.run(swept, "gnt-cluster", "verify")
        assert proc.returncode == 1, output(proc)
        assert f"  - ERROR: node node3: orphan disk file {stray}" in output(proc)
        ours = swept.gnt("gnt-cluster", "verify", ok=False)
        assert ours.returncode == 1 and f"orphan disk file {stray}" in output(ours)
        # 3.0's machine-parsable form, from 3.0's client and from ours
        parsable = f"  - ERROR:ENODEORPHANFILE:node:node3:orphan disk file {stray}"
        proc = ganeti3.run(swept, "gnt-cluster", "verify", "--error-codes")
        assert proc.returncode == 1 and parsable in output(proc), output(proc)
        ours = swept.gnt("gnt-cluster", "verify", "--error-codes", ok=False)
        assert ours.returncode == 1 and parsable in output(ours), output(ours)
    finally:
        stray.unlink()
        stray.parent.rmdir()


# --- commands refused with a clear error ------------------------------------------------

REFUSED: list[tuple[str, list[str], list[str]]] = [
    # Ganeti's other disk templates: not enabled here (file and diskless are)
    ("gnt-instance add -t plain",
     ["gnt-instance", "add", "-t", "plain", "-n", "node2", "--disk", "0:size=4M",
      "--no-name-check", "--no-ip-check", "--no-install", "sw-plain"],
     ["Disk template plain is not enabled in this cluster"]),
    # lzop is one of 3.0's compression tools, not ours
    ("gnt-backup export --transport-compression lzop",
     ["gnt-backup", "export", "-n", "node2", "--transport-compression", "lzop", STOPPED],
     ["Compression tool 'lzop' is not allowed in this cluster"]),
    # a 3.0 option for a feature we lack
    ("gnt-backup export --zero-free-space",
     ["gnt-backup", "export", "-n", "node2", "--zero-free-space", STOPPED],
     ["OP_BACKUP_EXPORT.zero_free_space", "not supported here"]),
    # no watcher pause here
    ("gnt-cluster watcher pause", ["gnt-cluster", "watcher", "pause", "1m"],
     ["Unknown LUXI method 'SetWatcherPause'"]),
    ("gnt-cluster modify --candidate-pool-size",
     ["gnt-cluster", "modify", "--candidate-pool-size", "5"],
     ["OP_CLUSTER_SET_PARAMS.candidate_pool_size", "not supported here"]),
    ("gnt-instance modify --disk add",
     ["gnt-instance", "modify", "--disk", "add:size=4M", STOPPED],
     ["OP_INSTANCE_SET_PARAMS.disks", "not supported here"]),
    # opcodes we do not have
    ("gnt-instance rename", ["gnt-instance", "rename", STOPPED, "sw-renamed"],
     ["Unknown opcode OP_INSTANCE_RENAME"]),
    ("gnt-instance migrate", ["gnt-instance", "migrate", "-f", RUNNING],
     ["Unknown opcode OP_INSTANCE_MIGRATE"]),
    # 3.0 renews the crypto over SSH, reading the nodes' SSH port first
    ("gnt-cluster renew-crypto", ["gnt-cluster", "renew-crypto",
                                  "--new-cluster-domain-secret", "-f"],
     ["Unknown output fields selected: ndp/ssh_port"]),
    # we write no ssconf files, which 3.0's getmaster reads
    ("gnt-cluster getmaster", ["gnt-cluster", "getmaster"],
     ["Can't read ssconf file", "ssconf_master_node"]),
]


def _state(cluster: E2ECluster) -> tuple[dict[int, str], list[Any]]:
    """Job id -> status, and the exports (the master's queries, asked in-process: what
    our own listings print is compared with 3.0's in the cases above)."""
    with cluster.luxi_client() as cl:
        jobs = {row[0][1]: row[1][1] for row in cl.query("job", ["id", "status"])["data"]}
        exports = cl.query("export", ["node", "export"])["data"]
    return jobs, exports


@pytest.mark.parametrize(("argv", "needles"), [(a, n) for _, a, n in REFUSED],
                         ids=[name for name, _, _ in REFUSED])
def test_3_0_command_is_refused_clearly(ganeti3: Ganeti3, swept: E2ECluster,
                                        argv: list[str], needles: list[str]) -> None:
    before, exports = _state(swept)
    # the export the fixture made is there (the comparison below is not of empty lists)
    ours = [[field[1] for field in row] for row in exports if row[1][1] == STOPPED]
    assert ours == [["node1", STOPPED]], exports
    _refused(ganeti3.run(swept, *argv), *needles)
    # nothing was left behind by the refusal
    assert swept.instance_conf("sw-plain") is None
    after, exports_after = _state(swept)
    assert exports_after == exports
    assert all(status in constants.JOBS_FINALIZED
               for job_id, status in after.items() if job_id in before)
