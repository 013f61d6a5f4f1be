"""The environment real hook scripts get on a running 3-node cluster, as Ganeti 3.0's.

Scripts installed in <sysconfdir>/ganeti/hooks/<path>-{pre,post}.d on every node
dump their environment; the tests run gnt-* commands and check which nodes ran
which phase and what they saw: an instance add, an export, an import of that
export, a removal and cluster verify (whose post hooks decide its result).
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator
from pathlib import Path

from support.cluster import E2ECluster

from ganeti import pathutils

PHASES = ("pre", "post")


@contextlib.contextmanager
def dump_hooks(cluster: E2ECluster, out: Path, *hpaths: str) -> Iterator[None]:
    """A script dumping its environment to out/<node>-<hpath>-<phase>, on every node."""
    scripts = []
    for node in cluster.nodes:
        for hpath in hpaths:
            for phase in PHASES:
                directory = node.paths.hooks_dir / f"{hpath}-{phase}.d"
                directory.mkdir(parents=True, exist_ok=True)
                script = directory / "50-dump-env"
                script.write_text(f"#!/bin/sh\nenv > {out}/{node.name}-{hpath}-{phase}\n")
                script.chmod(0o755)
                scripts.append(script)
    try:
        yield
    finally:
        for script in scripts:
            script.unlink(missing_ok=True)


def ran(out: Path, hpath: str, phase: str) -> list[str]:
    return sorted(p.name.split("-", 1)[0] for p in out.glob(f"*-{hpath}-{phase}"))


def env_of(out: Path, node: str, hpath: str, phase: str) -> dict[str, str]:
    text = (out / f"{node}-{hpath}-{phase}").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_add_export_import_remove(cluster: E2ECluster, tmp_path: Path) -> None:
    paths = ("instance-add", "instance-export", "instance-remove")
    with dump_hooks(cluster, tmp_path, *paths):
        cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                    "0:size=8M,name=root", "--net", "0:mode=bridged,link=br9",
                    "-H", "process:write_interval_ms=5,blocks=64", "-B", "vcpus=2",
                    "--tags", "web", "--no-start", "hooked")
        cluster.gnt("gnt-backup", "export", "-n", "node3", "hooked")
        conf = cluster.instance_conf("hooked")
        assert conf is not None
        export = {n: env_of(tmp_path, n, "instance-export", "pre") for n in ran(
            tmp_path, "instance-export", "pre")}
        created = tmp_path / "create"
        created.mkdir()
        for f in tmp_path.glob("*-instance-add-*"):
            f.rename(created / f.name)
        cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                    "--src-dir", "hooked", "--no-start", "hooked-copy")
        # the import's paths name the export's files (checked before it is removed)
        imp = env_of(tmp_path, "node1", "instance-add", "pre")
        node3 = cluster.node("node3").paths
        src = pathutils.from_wire_name(node3, imp["GANETI_SRC_PATH"])
        assert src == node3.export_dir / "hooked" and (src / "config.ini").is_file()
        images = ast.literal_eval(imp["GANETI_SRC_IMAGES"])
        assert len(images) == 1 and images[0].startswith(imp["GANETI_SRC_PATH"] + "/")
        assert pathutils.from_wire_name(node3, images[0]).is_file()
        cluster.gnt("gnt-instance", "remove", "-f", "hooked")
    cluster.gnt("gnt-instance", "remove", "-f", "hooked-copy")
    cluster.gnt("gnt-backup", "remove", "hooked")

    # create: master and primary, Ganeti's create-time variables
    assert ran(created, "instance-add", "pre") == ["node1", "node2"]
    add = env_of(created, "node2", "instance-add", "pre")
    assert add["GANETI_ADD_MODE"] == "create"
    assert "GANETI_SRC_PATH" not in add and "GANETI_INSTANCE_ADD_MODE" not in add
    assert add["GANETI_INSTANCE_STATUS"] == "False"                 # --no-start
    assert add["GANETI_INSTANCE_DISK0_NAME"] == "root"
    assert add["GANETI_INSTANCE_DISK0_UUID"] == ""
    assert add["GANETI_INSTANCE_NIC0_BRIDGE"] == add["GANETI_INSTANCE_NIC0_LINK"] == "br9"
    assert add["GANETI_INSTANCE_NIC0_VLAN"] == ""
    assert add["GANETI_INSTANCE_NIC0_UUID"] == conf["nics"][0]["uuid"]
    assert (add["GANETI_INSTANCE_BE_always_failover"], add["GANETI_INSTANCE_BE_auto_balance"],
            add["GANETI_INSTANCE_BE_spindle_use"], add["GANETI_INSTANCE_BE_vcpus"]) == (
        "False", "True", "1", "2")
    assert (add["GANETI_INSTANCE_HV_blocks"], add["GANETI_INSTANCE_HV_write_interval_ms"],
            add["GANETI_INSTANCE_HV_ignore_sigterm"]) == ("64", "5", "False")
    assert add["GANETI_INSTANCE_TAGS"] == "web"

    # export: master, primary and target
    assert sorted(export) == ["node1", "node2", "node3"]
    exp = export["node3"]
    assert exp["GANETI_REMOVE_INSTANCE"] == "False"
    assert exp["GANETI_EXPORT_NODE"] == "node3"
    assert exp["GANETI_EXPORT_DO_SHUTDOWN"] == "True"
    disk = conf["disks"][0]
    assert exp["GANETI_INSTANCE_DISK0_UUID"] == disk["uuid"]
    assert exp["GANETI_INSTANCE_DISK0_DEV_TYPE"] == "file"
    assert exp["GANETI_INSTANCE_DISK0_DRIVER"] == disk["logical_id"][0]
    assert exp["GANETI_INSTANCE_DISK0_ID"] == disk["logical_id"][1]
    assert exp["GANETI_INSTANCE_STATUS"] == "down"

    # import: master and the new primary; the export's directory on its node
    assert ran(tmp_path, "instance-add", "pre") == ["node1"]
    assert imp["GANETI_ADD_MODE"] == "import"
    assert imp["GANETI_SRC_NODE"] == "node3"
    post = env_of(tmp_path, "node1", "instance-add", "post")
    assert post["GANETI_POST_SRC_PATH"] == imp["GANETI_SRC_PATH"]
    assert post["GANETI_INSTANCE_NAME"] == "hooked-copy"

    # remove: pre on the master only, post also on the primary
    assert ran(tmp_path, "instance-remove", "pre") == ["node1"]
    assert ran(tmp_path, "instance-remove", "post") == ["node1", "node2"]
    assert env_of(tmp_path, "node2", "instance-remove", "post")[
        "GANETI_SHUTDOWN_TIMEOUT"] == "120"


def test_cluster_verify_runs_post_hooks_on_every_node(cluster: E2ECluster,
                                                      tmp_path: Path) -> None:
    failing = cluster.node("node3").paths.hooks_dir / "cluster-verify-post.d" / "60-check"
    with dump_hooks(cluster, tmp_path, "cluster-verify"):
        cluster.gnt("gnt-cluster", "verify")
        assert ran(tmp_path, "cluster-verify", "pre") == []
        assert ran(tmp_path, "cluster-verify", "post") == ["node1", "node2", "node3"]
        env = env_of(tmp_path, "node2", "cluster-verify", "post")
        assert env["GANETI_OP_CODE"] == "OP_CLUSTER_VERIFY_GROUP"
        assert env["GANETI_HOOKS_PHASE"] == "post"
        assert env["GANETI_OBJECT_TYPE"] == "CLUSTER"
        assert env["GANETI_CLUSTER_TAGS"] == ""
        assert {k for k in env if k.startswith("GANETI_NODE_TAGS_")} == {
            f"GANETI_NODE_TAGS_{n}" for n in ("node1", "node2", "node3")}
        assert "GANETI_POST_CLUSTER_TAGS" in env

        failing.write_text("#!/bin/sh\necho 'raid degraded'\necho 'disk 3 missing'\nexit 1\n")
        failing.chmod(0o755)
        try:
            proc = cluster.gnt("gnt-cluster", "verify", ok=False)
        finally:
            failing.unlink()
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "* Hooks Results" in out
    assert "node node3: Script cluster-verify-post.d/60-check failed, output:" in out
    assert "      raid degraded\n      disk 3 missing" in out
    cluster.gnt("gnt-cluster", "verify")
