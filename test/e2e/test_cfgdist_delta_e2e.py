"""The candidates' copies after a burst of changes, on a real 3-node cluster.

Creates, modifies and removes run as concurrent jobs; the distributor ships
journal records (deltas) to the master candidates in the background.  Each
candidate's copy, loaded as master failover will load it
(``config_journal.load``: file + journal), must equal the master's at the
same serial.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster, output

from ganeti import config_journal, constants, opcodes
from ganeti.config import ConfigStore

pytestmark = pytest.mark.e2e


def _conf(root: str) -> Path:
    return Path(root) / "var/lib/ganeti/config.data"


def _load(root: str) -> tuple[dict[str, Any], int]:
    return config_journal.load(_conf(root))


def _whole_files(cluster: E2ECluster, node: str) -> int:
    """How many whole files (config or CA) the node took, from its noded log."""
    log = cluster.node(node).paths.log_file(constants.NODED)
    return log.read_text(errors="replace").count("RPC upload_file from")


def _run_jobs(cluster: E2ECluster, ops: list[opcodes.OpCode]) -> None:
    """Every op as its own job, submitted at once; all must succeed."""
    with cluster.luxi_client(timeout=120) as cl:
        job_ids = [cl.submit_job([op]) for op in ops]
    for job_id in job_ids:
        status = cluster.wait_job_status(job_id, set(constants.JOBS_FINALIZED), timeout=300)
        if status != constants.OP_STATUS_SUCCESS:
            with cluster.luxi_client() as cl:
                (row,) = cl.query_jobs([job_id], ["opresult"])
            pytest.fail(f"job {job_id} ended {status}: {row}")


def _wait_same_serial(cluster: E2ECluster, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        master = _load(cluster.master.root)[1]
        held = [_load(cluster.node(n).root)[1] for n in ("node2", "node3")]
        if held == [master, master]:
            return master
        assert time.monotonic() < deadline, f"candidates at {held}, master at {master}"
        time.sleep(0.1)


def test_candidates_equal_the_master_after_a_burst(cluster: E2ECluster, tmp_path: Path
                                                   ) -> None:
    names = [f"dl{i}" for i in range(8)]
    files_before = {n: _whole_files(cluster, n) for n in ("node2", "node3")}
    _run_jobs(cluster, [opcodes.OpInstanceCreate.create(
        instance_name=name, pnode="node2", disk_template=constants.DT_FILE,
        disks=[{"size": 1}], start=False) for name in names])
    _run_jobs(cluster, [opcodes.OpInstanceSetParams.create(
        instance_name=name, beparams={"maxmem": 200 + idx})
        for idx, name in enumerate(names[:5])])
    _run_jobs(cluster, [opcodes.OpInstanceRemove.create(instance_name=name)
                        for name in names[5:]])
    cluster.gnt("gnt-cluster", "add-tags", "cfgdist-delta")
    serial = _wait_same_serial(cluster)
    master = _load(cluster.master.root)[0]
    assert sorted(i["name"] for i in master["instances"].values()
                  if i["name"].startswith("dl")) == sorted(names[:5])
    for node in ("node2", "node3"):
        copy, held = _load(cluster.node(node).root)
        assert held == serial
        assert copy == master, f"{node}'s copy differs from the master's at serial {serial}"
    # the changes arrived as records in the candidates' journals, not as whole files
    for node in ("node2", "node3"):
        journal = config_journal.journal_path(_conf(cluster.node(node).root))
        assert journal.exists() and journal.stat().st_size > 0, node
        assert _whole_files(cluster, node) == files_before[node], node
    # what master failover will do: open the store on a candidate's copy (copied aside)
    for node in ("node2", "node3"):
        aside = tmp_path / node / "config.data"
        aside.parent.mkdir()
        for src in (_conf(cluster.node(node).root),
                    config_journal.journal_path(_conf(cluster.node(node).root))):
            shutil.copy2(src, aside.with_name(src.name))
        store = ConfigStore(aside)
        try:
            assert store.get_serial() == serial
            assert sorted(i.name for i in store.snapshot().get_all_instances_info().values()
                          if i.name.startswith("dl")) == sorted(names[:5])
        finally:
            store.close()
    proc = cluster.gnt("gnt-cluster", "verify", ok=False, timeout=240)
    assert "configuration lags" not in output(proc), output(proc)
    for name in names[:5]:
        cluster.gnt("gnt-instance", "remove", "-f", name)
