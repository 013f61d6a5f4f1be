"""ganeti.watcher pieces without daemons: identity, expired crypto, instance restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ganeti import constants, crypto, pathutils, watcher
from ganeti.backend import x509


def _paths(tmp_path: Path) -> pathutils.Paths:
    return pathutils.Paths.for_root(tmp_path)


def _node_files(paths: pathutils.Paths, name: str, master: bool) -> None:
    ca_cert, ca_key = crypto.generate_cluster_ca("c.example", 10)
    cert, key = crypto.generate_node_certificate(ca_cert, ca_key, name, ["127.0.0.1"], 10)
    paths.data_dir.mkdir(parents=True)
    crypto.write_pem_pair(paths.node_cert_file, cert, key)
    paths.cluster_conf_file.write_text(json.dumps({
        "serial_no": 1,
        "cluster": {"master_node": "u1" if master else "u2", "noded_port": 1811},
        "nodes": {"u1": {"name": name, "primary_ip": "127.0.0.9", "port": None},
                  "u2": {"name": "other", "primary_ip": "127.0.0.8", "port": 99}}}))


@pytest.mark.parametrize("master", [True, False])
def test_identity_from_certificate_and_config(tmp_path: Path, master: bool) -> None:
    paths = _paths(tmp_path)
    _node_files(paths, "nodeA", master)
    assert watcher.own_identity(paths) == watcher.NodeIdentity("nodeA", "127.0.0.9", 1811,
                                                               master)


def test_not_a_node_is_reported(tmp_path: Path) -> None:
    report = watcher.run(_paths(tmp_path))
    assert report.problems and "not a cluster node" in report.problems[0]
    assert watcher.main(["--root", str(tmp_path)]) == 1


def test_expired_crypto_material_is_removed_valid_kept(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    base = x509.x509_dir(paths)
    base.mkdir(parents=True)
    old, new = "x509-1000000000-00000000000000aa", "x509-1000000000-00000000000000bb"
    for name, validity in ((old, -10), (new, 3600)):
        cert, key = crypto.generate_self_signed(name, validity)
        (base / name).mkdir()
        crypto.write_pem_pair(base / name / x509.KEY_FILE, cert, key)
        (base / name / x509.CERT_FILE).write_text(cert)
    report = watcher.Report()
    watcher.clean_expired_crypto(paths, report)
    assert sorted(p.name for p in base.iterdir()) == [new]
    assert report.actions == [f"removed expired crypto material {old}"]


def test_dead_and_zombie_pids_are_not_alive(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.run_dir.mkdir(parents=True)
    assert not watcher.daemon_alive(paths, constants.NODED)     # no pid file
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    paths.pid_file(constants.NODED).write_text(f"{pid}\n")
    stat_file = Path(f"/proc/{pid}/stat")
    while stat_file.read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        pass
    assert not watcher.daemon_alive(paths, constants.NODED)     # a zombie
    os.waitpid(pid, 0)
    paths.pid_file(constants.NODED).write_text(f"{os.getpid()}\n")
    assert watcher.daemon_alive(paths, constants.NODED)


class FakeClient:
    """Answers the few LUXI calls restart_instances makes."""

    def __init__(self, instances: list[tuple[str, str, bool]],
                 running_jobs: list[str] = ()) -> None:  # type: ignore[assignment]
        self.instances = instances
        self.running_jobs = list(running_jobs)
        self.submitted: list[Any] = []

    def query(self, what: str, fields: list[str], qfilter: Any = None) -> dict[str, Any]:
        assert what == "instance"
        return {"data": [[[0, n], [0, a], [0, r]] for n, a, r in self.instances]}

    def query_jobs(self, ids: Any, fields: list[str]) -> list[Any]:
        if ids is None:
            return [["running", [s]] for s in self.running_jobs]
        return [["success", [None]] for _ in ids]

    def submit_job(self, ops: list[Any]) -> int:
        self.submitted.append(ops[0].instance_name)
        return len(self.submitted)


def test_restarts_only_admin_up_instances_that_do_not_run(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.data_dir.mkdir(parents=True)
    cl = FakeClient([("up-dead", "up", False), ("up-running", "up", True),
                     ("down", "down", False), ("busy", "up", False)],
                    running_jobs=["BACKUP_EXPORT(busy)"])
    report = watcher.Report()
    watcher.restart_instances(cl, paths, 5, report)  # type: ignore[arg-type]
    assert cl.submitted == ["up-dead"]
    assert "restarted instance up-dead (job 1)" in report.actions
    assert any("busy" in a and "running job" in a for a in report.actions)


def test_gives_up_after_max_restarts(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.data_dir.mkdir(parents=True)

    class Failing(FakeClient):
        def query_jobs(self, ids: Any, fields: list[str]) -> list[Any]:
            return [["error", ["boom"]] for _ in ids] if ids else []

    cl = Failing([("flaky", "up", False)])
    for _ in range(watcher.MAX_RESTARTS + 2):
        report = watcher.Report()
        watcher.restart_instances(cl, paths, 5, report)  # type: ignore[arg-type]
    assert len(cl.submitted) == watcher.MAX_RESTARTS
    assert any("gave up" in p for p in report.problems)
