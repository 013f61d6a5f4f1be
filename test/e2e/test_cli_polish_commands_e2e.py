"""Results of the gnt-* commands through the real scripts on a 3-node cluster: --dry-run
says that the checks passed, start/stop/reboot confirm, gnt-instance info's state line,
messages name the option (not the opcode field), gnt-cluster info in Ganeti's layout,
gnt-cluster verify --error-codes/--node-group/--no-nplus1-mem, list -g -o +generation."""

from __future__ import annotations

import re

import pytest
from support.cluster import E2ECluster

from ganeti import constants, opcodes

pytestmark = pytest.mark.e2e


def _add(cluster: E2ECluster, name: str, *extra: str) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=8M",
                "-H", "process:write_interval_ms=5,blocks=64", *extra, name)


def test_dry_run_says_the_checks_passed_and_changes_nothing(cluster: E2ECluster) -> None:
    out = cluster.gnt("gnt-instance", "add", "--dry-run", "-t", "file", "-n", "node2",
                      "--disk", "0:size=8M", "dry1").stdout
    assert out.strip().endswith("Primary node: node2\nDry run: the checks passed;"
                                " gnt-instance add dry1 would create an instance. Nothing"
                                " was changed."), out
    assert cluster.instance_conf("dry1") is None
    out = cluster.gnt("gnt-node", "modify", "--dry-run", "--drained", "yes", "node3").stdout
    assert "Dry run: the checks passed; gnt-node modify node3 would" in out, out
    drained = cluster.gnt("gnt-node", "list", "--no-headers", "-o", "drained", "node3")
    assert drained.stdout == "N\n"
    out = cluster.gnt("gnt-cluster", "verify", "--dry-run").stdout
    assert "Dry run: the checks passed; gnt-cluster verify would" in out, out
    # a failed check is a failure, not a dry-run success
    proc = cluster.gnt("gnt-instance", "start", "--dry-run", "nosuch", ok=False)
    assert proc.returncode == 1 and "Dry run" not in proc.stdout
    assert "Instance 'nosuch' not known" in proc.stderr


def test_start_stop_reboot_confirm_and_info_state(cluster: E2ECluster) -> None:
    _add(cluster, "conf1", "--no-start")
    info = cluster.gnt("gnt-instance", "info", "conf1").stdout
    assert "State: configured to be down, actual state is down\n" in info
    out = cluster.gnt("gnt-instance", "start", "conf1").stdout
    assert out.splitlines()[-1] == "Instance conf1 started."
    info = cluster.gnt("gnt-instance", "info", "conf1").stdout
    assert "State: configured to be up, actual state is up\n" in info
    # --static knows no actual state: Ganeti's line leaves it out
    static = cluster.gnt("gnt-instance", "info", "--static", "conf1").stdout
    assert "State: configured to be up\n" in static and "actual state" not in static
    out = cluster.gnt("gnt-instance", "reboot", "conf1").stdout
    assert out.splitlines()[-1] == "Instance conf1 rebooted (hard)."
    out = cluster.gnt("gnt-instance", "stop", "--timeout", "20", "conf1").stdout
    assert out.splitlines()[-1] == "Instance conf1 stopped."
    for text in (info, static):
        assert "ADMIN_down" not in text and "unknown" not in text
    cluster.gnt("gnt-instance", "remove", "-f", "conf1")


def test_messages_name_the_option_for_the_cli_and_the_field_for_luxi(
        cluster: E2ECluster) -> None:
    _add(cluster, "sleep1")  # running, on storage without snapshots
    proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "sleep1", ok=False)
    assert proc.returncode == 1
    assert "confirm this with --long-sleep" in proc.stderr, proc.stderr
    assert "long_sleep" not in proc.stderr and "`" not in proc.stderr
    # a LUXI (or RAPI) caller sent opcode fields: the message names the field
    with cluster.luxi_client() as cl:
        job_id = cl.submit_job([opcodes.OpBackupExport.create(
            instance_name="sleep1", target_node="node3")])
    assert cluster.wait_job_status(job_id, set(constants.JOBS_FINALIZED)) == "error"
    with cluster.luxi_client() as cl:
        (row,) = cl.query_jobs([job_id], ["opresult"])
    text = str(row[0])
    assert "confirm this with `long_sleep`" in text and "--long-sleep" not in text
    cluster.gnt("gnt-instance", "remove", "-f", "sleep1")


def test_cluster_info_is_laid_out_as_ganetis(cluster: E2ECluster) -> None:
    info = cluster.gnt("gnt-cluster", "info").stdout
    lines = info.splitlines()
    assert lines[0] == "Cluster name: cluster.local"
    assert lines[1].startswith("Cluster UUID: ")
    assert re.fullmatch(r"Creation time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[2])
    assert "Master node: node1" in lines
    assert "Enabled hypervisors: process" in lines
    assert "Cluster parameters:" in lines and "  enabled disk templates: file" in lines
    assert "Backup defaults:" in lines
    # no raw dump: no float times, no dict or list reprs, no uuid for the master
    assert not re.search(r"\d{9,}\.\d", info), info
    assert "{" not in info and "[" not in info, info
    assert "master_node" not in info


def test_verify_error_codes_node_group_and_nplus1(cluster: E2ECluster) -> None:
    plain = cluster.gnt("gnt-cluster", "verify").stdout
    assert "* Verifying N+1 Memory redundancy" in plain
    skipped = cluster.gnt("gnt-cluster", "verify", "--no-nplus1-mem").stdout
    assert "N+1" not in skipped
    cluster.gnt("gnt-cluster", "verify", "--node-group", "default")
    proc = cluster.gnt("gnt-cluster", "verify", "--node-group", "nosuch", ok=False)
    assert proc.returncode == 1 and "Node group 'nosuch' not known" in proc.stderr
    stray = cluster.node("node3").paths.file_storage_dir / "ghost.example.com" / "x.disk0"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\0" * 512)
    try:
        proc = cluster.gnt("gnt-cluster", "verify", "--error-codes", ok=False)
        assert proc.returncode == 1
        assert (f"  - ERROR:ENODEORPHANFILE:node:node3:orphan disk file {stray} (no"
                " instance in the configuration owns it)") in proc.stdout, proc.stdout
        proc = cluster.gnt("gnt-cluster", "verify", ok=False)
        assert f"  - ERROR: node node3: orphan disk file {stray}" in proc.stdout
    finally:
        stray.unlink()
        stray.parent.rmdir()


def test_backup_list_generations_plus_field_once(cluster: E2ECluster) -> None:
    _add(cluster, "gen1", "--no-start")
    cluster.gnt("gnt-backup", "export", "-n", "node3", "gen1")
    out = cluster.gnt("gnt-backup", "list", "-g", "-o", "+generation", "gen1").stdout
    header = out.splitlines()[0].split()
    assert header.count("Generation") == 1, out
    assert len(out.splitlines()) == 2
    assert "" not in out.splitlines()
    cluster.gnt("gnt-backup", "remove", "gen1")
    cluster.gnt("gnt-instance", "remove", "-f", "gen1")
