"""The loopback RPC harness of the LU unit tests (no tests here).

``Env`` is a master (config, locks, real processor) whose "RPC" calls the
node procedures in-process, with one node root per node under tmp_path and
the fake hypervisor: the LUs' effects on disks and instances are real while
no daemon runs.  ``remote_pair`` makes two such clusters sharing a cluster
domain secret, for the remote export/import LUs.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ganeti import constants, crypto, errors, locking, opcodes, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import instance as bk
from ganeti.backup import remote
from ganeti.config import ConfigStore, make_initial_config
from ganeti.context import MasterContext
from ganeti.mcpu import Processor
from ganeti.objects import Instance, Node
from ganeti.rpc.client import PreparedCall, RpcRunner
from ganeti.rpc.result import RpcResult
from ganeti.server import noded
from ganeti.tools import move_instance

LEVELS = (locking.LEVEL_INSTANCE, locking.LEVEL_NODE, locking.LEVEL_NODE_RES)


class LoopbackRpc(RpcRunner):
    """Runs node procedures in-process; records hook runs and calls.

    The real runner's typed methods, encoders and timeouts; only the transport
    (``run``) is replaced.  Arguments travel as JSON and are checked like the
    node daemon checks them.
    """

    def __init__(self, cfg: ConfigStore, roots: dict[str, NodeContext],
                 glm_getter: Any, paths: pathutils.Paths | None = None) -> None:
        super().__init__(lambda name: None, _no_tls, paths=paths or pathutils.current(),
                         max_workers=1)
        self.cfg = cfg
        self.roots = roots
        self.glm_getter = glm_getter
        self.fail: dict[str, str] = {}
        self.fail_after: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.hooks: list[dict[str, Any]] = []

    def run(self, procedure: str, nodes: Iterable[str], args: list[Any], timeout: float,
            call_name: str = "") -> dict[str, RpcResult[Any]]:
        wire = json.loads(json.dumps(args))
        return {n: self._run(procedure, n, wire) for n in dict.fromkeys(nodes)}

    def run_prepared(self, prepared: PreparedCall, nodes: Iterable[str]
                     ) -> dict[str, RpcResult[Any]]:
        return self.run(prepared.procedure, nodes, prepared.args, prepared.timeout,
                        prepared.name)

    def _run(self, procedure: str, node: str, args: list[Any]) -> RpcResult:
        self.calls.append((procedure, node))
        info = self.cfg.get_node_info_by_name(node)
        if info is None:
            return RpcResult(node, fail_msg=f"Node {node} is unknown")
        if info.offline:
            return RpcResult(node, offline=True)
        if procedure == "hooks_runner":
            glm = self.glm_getter()
            self.hooks.append({"node": node, "hpath": args[0], "phase": args[1],
                               "env": args[2],
                               "locks": {lvl: sorted(glm.owned(lvl)) for lvl in LEVELS}})
            return RpcResult(node, data=[])
        budget = self.fail_after.get(procedure)
        if budget is not None:
            if budget <= 0:
                return RpcResult(node, fail_msg=f"injected failure of {procedure}")
            self.fail_after[procedure] = budget - 1
        if procedure in self.fail:
            return RpcResult(node, fail_msg=self.fail[procedure])
        try:
            return RpcResult(node, data=noded.TABLE[procedure].run(self.roots[node], args))
        except (RpcFail, errors.GenericError) as err:
            return RpcResult(node, fail_msg=str(err))


def _no_tls() -> ssl.SSLContext:
    raise AssertionError("the loopback RPC opens no connections")


class Callbacks:
    def __init__(self) -> None:
        self.log: list[Any] = []
        # follow-up jobs an LU submitted (ResultWithJobs); not run: Env.run_submitted does
        self.submitted: list[list[Any]] = []

    def notify_start(self) -> None:
        pass

    def feedback(self, log_type: str, message: Any) -> None:
        self.log.append(message)

    def current_priority(self) -> int:
        return 0

    def bump_priority(self) -> None:
        pass

    def check_cancel(self) -> None:
        pass

    def submit_many_jobs(self, jobs: Any) -> Any:
        first = len(self.submitted) + 1
        self.submitted.extend(jobs)
        return [(True, first + idx) for idx in range(len(jobs))]


class Env:
    def __init__(self, tmp_path: Path) -> None:
        data = make_initial_config("cluster.local", "node1", None, "127.0.0.1",
                                   enabled_hypervisors=["fake", "process"])
        # where the master's paths say: the config distribution uploads that file
        conf_file = pathutils.Paths.for_root(tmp_path / "node1").cluster_conf_file
        conf_file.parent.mkdir(parents=True, exist_ok=True)
        self.cfg = ConfigStore.initialize(conf_file, data)
        for idx in (2, 3):
            self.cfg.add_node(Node(name=f"node{idx}", primary_ip=f"127.0.0.{idx}",
                                   master_candidate=True))
        self.roots = {f"node{i}": NodeContext(paths=pathutils.Paths.for_root(
            tmp_path / f"node{i}")) for i in (1, 2, 3)}
        self.rpc = LoopbackRpc(self.cfg, self.roots, self._glm, paths=self.roots["node1"].paths)
        self.ctx: MasterContext = MasterContext(
            pathutils.Paths.for_root(tmp_path / "node1"), self.cfg,
            rpc=self.rpc)
        self.processor = Processor(self.ctx, [5.0])
        self.cbs = Callbacks()

    def _glm(self) -> locking.GanetiLockManager:
        return self.ctx.glm

    def close(self) -> None:
        """End the configuration distributor's workers (cluster verify's flush starts
        one per candidate, which would otherwise outlive the test)."""
        self.ctx.distribution.stop(flush_timeout=0)

    def run(self, op: opcodes.OpCode) -> Any:
        return self.processor.execute_opcode(op, self.cbs)

    def run_submitted(self, op: opcodes.OpCode) -> list[list[Any]]:
        """Run ``op`` and then the follow-up jobs it submitted: their opcodes' results."""
        done = len(self.cbs.submitted)
        self.run(op)
        return [[self.run(job_op) for job_op in job]
                for job in self.cbs.submitted[done:]]

    def create(self, name: str = "inst1", pnode: str | None = "node2", **fields: Any) -> Any:
        fields.setdefault("disks", [{"size": 4}, {"size": 2, "name": "data"}])
        fields.setdefault("hypervisor", "fake")
        return self.run(opcodes.OpInstanceCreate.create(instance_name=name, pnode=pnode,
                                                        **fields))

    def inst(self, name: str = "inst1") -> Instance:
        inst = self.cfg.get_instance_info_by_name(name)
        assert inst is not None
        return inst

    def live(self, name: str = "inst1", node: str = "node2") -> dict[str, Any] | None:
        return bk.instance_info(self.roots[node], name, "fake")

    def disk_files(self, node: str = "node2") -> list[Path]:
        base = self.roots[node].paths.file_storage_dir
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def set_offline(self, node_name: str, offline: bool) -> None:
        node = self.cfg.get_node_info_by_name(node_name)
        assert node is not None
        node.offline = offline
        self.cfg.update(node)


def certified_env(tmp_path: Path) -> Env:
    """An Env whose node roots have the cluster certificates local exports use."""
    env = Env(tmp_path)
    ca_cert, ca_key = crypto.generate_cluster_ca("cluster.local", 1)
    for index, (name, ctx) in enumerate(sorted(env.roots.items()), start=1):
        paths = ctx.paths
        paths.cluster_ca_file.parent.mkdir(parents=True, exist_ok=True)
        paths.cluster_ca_file.write_text(ca_cert)
        cert, key = crypto.generate_node_certificate(ca_cert, ca_key, name,
                                                     [f"127.0.0.{index}"], 1)
        crypto.write_pem_pair(paths.node_cert_file, cert, key)
    return env


# --- two clusters for the remote (inter-cluster) export and import LUs ----------------

SECRET = "5" * 128


class LogCallbacks(Callbacks):
    """Keeps (type, message) so the structured remote-import entry can be read."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, Any]] = []

    def feedback(self, log_type: str, message: Any) -> None:
        super().feedback(log_type, message)
        self.entries.append((log_type, message))

    def structured(self) -> dict[str, Any] | None:
        return next((m for t, m in self.entries if t == constants.ELOG_REMOTE_IMPORT), None)


def remote_pair(tmp_path: Path) -> tuple[Env, Env]:
    """A source and a destination cluster sharing one cluster domain secret."""
    src, dst = Env(tmp_path / "src"), Env(tmp_path / "dst")
    for env in (src, dst):
        env.ctx.paths.data_dir.mkdir(parents=True, exist_ok=True)
        remote.write_domain_secret(env.ctx.paths.cluster_domain_secret_file, SECRET)
    return src, dst


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fill_source(src: Env) -> list[str]:
    """Create the stopped instance inst1 with random data; the sha256 of each disk."""
    src.create("inst1", start=False)
    digests = []
    for disk in src.inst("inst1").disks:
        with open(disk.logical_id[1], "r+b") as handle:
            handle.write(os.urandom(300_000))
        digests.append(digest(disk.logical_id[1]))
    return digests


class Import:
    """The destination's OpInstanceCreate(remote-import), running in a thread."""

    def __init__(self, src: Env, dst: Env, prepared: dict[str, Any], **extra: Any) -> None:
        data = src.run(opcodes.OpInstanceQueryData.create(instances=["inst1"],
                                                          static=True))["inst1"]
        opts = type("Opts", (), {"start": False, "dest_instance_name": "moved",
                                 "dest_primary_node": "node3", "shutdown_timeout": 0})()
        fields = {**move_instance.import_opcode(data, opts, prepared, "inst1").to_dict(),
                  **extra}
        self.op = opcodes.from_dict(fields)
        self.cbs = LogCallbacks()
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(dst,))
        self.thread.start()

    def _run(self, dst: Env) -> None:
        try:
            self.result = dst.processor.execute_opcode(self.op, self.cbs)
        except Exception as err:
            self.result = err

    def endpoints(self) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while (entry := self.cbs.structured()) is None:
            assert self.thread.is_alive(), self.result
            assert time.monotonic() < deadline, "no remote-import entry"
            time.sleep(0.01)
        return entry

    def join(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.result


def remote_export_op(prepared: dict[str, Any], entry: dict[str, Any], **extra: Any
                     ) -> opcodes.OpCode:
    """The source's OpBackupExport(remote) to the endpoints ``entry`` announced."""
    fields = {"instance_name": "inst1", "mode": "remote", "target_node": entry["disks"],
              "x509_key_name": prepared["x509_key_name"],
              "destination_x509_ca": entry["x509_ca"], **extra}
    return opcodes.OpBackupExport.create(**fields)
