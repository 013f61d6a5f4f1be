"""The CLI's one rule for misses, through the real gnt-* scripts on a 3-node cluster:
an unknown field or an object that is not there is one line on stderr in one wording,
nothing on stdout, exit 1."""

from __future__ import annotations

import pytest
from support.cluster import E2ECluster

pytestmark = pytest.mark.e2e

_FAILURE = "Failure: prerequisites not met for this operation: "


def _refused(cluster: E2ECluster, *argv: str) -> str:
    proc = cluster.gnt(*argv, ok=False)
    assert proc.returncode == 1, (argv, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", (argv, proc.stdout)
    return proc.stderr


@pytest.mark.parametrize("argv, message", [
    (("gnt-node", "info", "nosuch"), "Node 'nosuch' not known (unknown_entity)"),
    (("gnt-node", "info", "node1", "nosuch"), "Node 'nosuch' not known (unknown_entity)"),
    (("gnt-node", "list", "nosuch"), "Node 'nosuch' not known (unknown_entity)"),
    (("gnt-node", "list", "-o", "pip", "node2", "nosuch"),
     "Node 'nosuch' not known (unknown_entity)"),
    (("gnt-instance", "list", "nosuch"), "Instance 'nosuch' not known (unknown_entity)"),
    (("gnt-instance", "info", "nosuch"), "Instance 'nosuch' not known (unknown_entity)"),
    (("gnt-job", "list", "9999"), "Job '9999' not known (unknown_entity)"),
    (("gnt-job", "info", "9999"), "Job '9999' not known (unknown_entity)"),
    (("gnt-job", "watch", "9999"), "Job '9999' not known (unknown_entity)"),
    (("gnt-job", "cancel", "9999"), "Job '9999' not known (unknown_entity)"),
    (("gnt-backup", "list", "nosuch"), "Export 'nosuch' not known (unknown_entity)"),
    (("gnt-backup", "schedule", "list", "nosuch"),
     "Backup schedule 'nosuch' not known (unknown_entity)"),
    (("gnt-backup", "schedule", "modify", "nosuch", "--enabled", "no"),
     "Backup schedule 'nosuch' not known (unknown_entity)"),
    (("gnt-debug", "locks", "nosuch"), "Lock 'nosuch' not known (unknown_entity)"),
    (("gnt-node", "list-tags", "nosuch"), "Node 'nosuch' not known (unknown_entity)"),
    (("gnt-node", "list", "-o", "name,colour"),
     "Unknown output fields selected: colour (wrong_input)"),
    (("gnt-job", "list", "-o", "id,colour"),
     "Unknown output fields selected: colour (wrong_input)"),
    (("gnt-backup", "list", "-o", "node,colour"),
     "Unknown output fields selected: colour (see 'gnt-backup list-fields') (wrong_input)"),
    (("gnt-node", "list", "-o", ""), "-o/--output: no fields given"),
    (("gnt-backup", "list", "-g", "-o", ""), "-o/--output: no fields given"),
])
def test_one_rule_for_misses(cluster: E2ECluster, argv: tuple[str, ...],
                             message: str) -> None:
    err = _refused(cluster, *argv)
    assert err.startswith(_FAILURE) and message in err, err
    assert len(err.splitlines()) == 1, err


def test_hits_still_work(cluster: E2ECluster) -> None:
    info = cluster.gnt("gnt-node", "info", "node2").stdout
    assert info.startswith("Node name: node2\n")
    # a short name finds the node, as the master's name equality does
    out = cluster.gnt("gnt-node", "list", "--no-headers", "-o", "name", "node3").stdout
    assert out == "node3\n"
    # a glob selects: no match is no miss
    assert cluster.gnt("gnt-node", "list", "--no-headers", "zz*").stdout == ""
    # +FIELD already among the defaults: shown once
    header = cluster.gnt("gnt-node", "list", "-o", "+name,pip").stdout.splitlines()[0]
    assert header.split().count("Node") == 1 and header.split().count("PrimaryIP") == 1
