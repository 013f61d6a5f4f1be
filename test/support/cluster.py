"""The local cluster as tests drive it: gnt-* commands, nodes and the config by name."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ganeti import cli, config_journal, constants, daemon, errors, luxi, opcodes
from ganeti.hypervisor import procutil
from ganeti.hypervisor.hv_process import ProcessHypervisor
from ganeti.rpc.client import RpcRunner
from ganeti.tools.local_cluster import SOURCE_TOP, LocalCluster, NodeSpec
from support import gntfork
from support.rapi import add_rapi_user
from support.rpc import make_rpc_runner


class E2ECluster(LocalCluster):
    """A LocalCluster whose gnt-* runs fail the test unless they succeed (``ok``)."""

    def gnt(self, *argv: str, ok: bool = True, check: bool = False, timeout: float = 300,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a gnt-* command; unless ``ok`` is False (the caller checks the exit code
        and output itself), assert that it succeeded, quoting its output if not."""
        command = [sys.executable, str(SOURCE_TOP / "scripts" / argv[0]), *argv[1:]]
        proc = gntfork.run(command, self.env(), timeout, input_text)
        if proc is None:
            proc = super().gnt(*argv, check=check, timeout=timeout, input_text=input_text)
        elif check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):"
                               f" {proc.stderr.strip() or proc.stdout.strip()}")
        if ok:
            assert proc.returncode == 0, (f"{' '.join(argv)} failed ({proc.returncode}):\n"
                                          f"{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, log: Any = print) -> None:
        """LocalCluster.start with less waiting (every e2e module starts a cluster):
        the node daemons start side by side, then masterd and RAPI, and the nodes
        not yet in the config are added over LUXI, without a gnt-* process each.
        The same daemons and jobs (one OpNodeAdd per node, in order) as there."""
        if self.rapi_port is None:   # a cluster made before RAPI: the base class picks one
            super().start(log)
            return
        daemons = SOURCE_TOP / "daemons"
        _together([
            functools.partial(self._run_daemon, [str(daemons / constants.NODED), "--bind",
                                                 node.address, "--port", str(self.port)], node)
            for node in self.nodes if not self.is_running(constants.NODED, node)])
        rapi_args = ["--bind", self.master.address, "--port", str(self.rapi_port)]
        masters = [
            functools.partial(self._run_daemon, [str(daemons / name), *args], self.master)
            for name, args in ((constants.MASTERD, []), (constants.RAPI, rapi_args))
            if not self.is_running(name, self.master)]
        if self.master.paths.rapi_cert.exists():
            _together(masters)
        else:   # RAPI asks masterd for the names its new certificate is for
            for call in masters:
                call()
        with self.luxi_client() as cl:
            known = {row[0][1] for row in cl.query("node", ["name"])["data"]}
            added = [node for node in self.nodes[1:] if node.name not in known]
            for node in added:
                job_id = cl.submit_job([opcodes.OpNodeAdd.create(
                    node_name=node.name, primary_ip=node.address)])
                cli.poll_job(job_id, cl, feedback_fn=lambda _entry: None)
                log(f"{node.name}: added to the cluster")
        if added:
            self._wait_candidates_current()

    def _wait_candidates_current(self, timeout: float = 60.0) -> None:
        """Until every node's copy of the config is the master's: a node add flushes
        only to the new node, the earlier ones get it in the background."""
        def serial(node: NodeSpec) -> int | None:
            try:
                return config_journal.load(node.paths.cluster_conf_file)[1]
            except errors.ConfigurationError:  # not there yet
                return None

        deadline = time.monotonic() + timeout
        while True:
            wanted = serial(self.master)
            behind = [n.name for n in self.nodes[1:] if serial(n) != wanted]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {behind} still lack configuration serial"
                                     f" {wanted} after {timeout:.0f}s")
            time.sleep(0.05)

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise KeyError(f"no node {name!r} in {[n.name for n in self.nodes]}")

    def instance_conf(self, name: str) -> dict[str, Any] | None:
        """The instance's entry in the master's config file (None: no such instance)."""
        data = config_journal.load(self.master.paths.cluster_conf_file)[0]
        found: dict[str, Any] | None = next(
            (i for i in data["instances"].values() if i["name"] == name), None)
        return found

    def disk_path(self, name: str, index: int = 0) -> Path:
        """The file of a file disk of an instance."""
        conf = self.instance_conf(name)
        assert conf is not None, f"no instance {name}"
        return Path(conf["disks"][index]["logical_id"][1])

    def kill_noded_when(self, node_name: str, path: Path, timeout: float = 60.0) -> None:
        """SIGKILL a node's daemon as soon as ``path`` appears there (e.g. a staging dump:
        the copy has started); fails the test if it never does."""
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.exists(), f"{path} never appeared (the transfer never started)"
        self._sigkill_noded(node_name)

    def _sigkill_noded(self, node_name: str) -> None:
        pid = daemon.read_pid(self.node(node_name).paths.pid_file(constants.NODED))
        assert pid is not None, f"no {constants.NODED} pid on {node_name}"
        os.kill(pid, signal.SIGKILL)

    def kill_noded(self, node_name: str, timeout: float = 60.0) -> None:
        """SIGKILL a node's daemon and wait until it is gone (what it ran ends at once;
        ``start()`` brings it back)."""
        self._sigkill_noded(node_name)
        deadline = time.monotonic() + timeout
        while self.is_running(constants.NODED, self.node(node_name)):
            assert time.monotonic() < deadline, f"{node_name}'s daemon did not die"
            time.sleep(0.02)

    def guest_pids(self, node_name: str, instance_name: str) -> list[int]:
        """The guest processes of an instance on a node (their arguments name its state
        directory under the node's own root)."""
        run_dir = self.node(node_name).paths.run_dir
        return procutil.find_processes(str(run_dir / "instances" / instance_name))

    def wait_guest_generation(self, node_name: str, instance_name: str, above: int,
                              timeout: float = 60.0) -> int:
        """The simulated guest's generation once it has written past ``above``."""
        hv = ProcessHypervisor(self.node(node_name).paths)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = hv.guest_status(instance_name)
            if status is not None and status.generation > above:
                return int(status.generation)
            time.sleep(0.02)
        raise AssertionError(f"guest {instance_name} did not write past generation {above}")

    def instance_disk_files(self, name: str) -> list[Path]:
        """Every file in the instance's file-storage directory, on any node."""
        found: list[Path] = []
        for node in self.nodes:
            inst_dir = node.paths.file_storage_dir / name
            if inst_dir.exists():
                found.extend(inst_dir.iterdir())
        return found

    def luxi_client(self, timeout: float = 60.0) -> luxi.Client:
        """A LUXI client of the master daemon (a context manager)."""
        return luxi.Client(str(self.master.paths.master_socket), timeout=timeout)

    def wait_job_status(self, job_id: int, wanted: set[str], timeout: float = 120.0) -> str:
        """The job's status once it is one of ``wanted`` (long polls, no fixed sleep);
        fails the test if the job ends in another one, or after ``timeout`` seconds."""
        prev: Any = None
        deadline = time.monotonic() + timeout
        with self.luxi_client() as cl:
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"job {job_id} still {prev} after {timeout}s, not {wanted}"
                change = cl.wait_for_job_change_once(job_id, ["status"], prev, None,
                                                     min(10.0, left))
                assert change is not None, f"job {job_id} vanished"
                if change != luxi.JOB_NOTCHANGED:
                    prev = change[0]
                    if prev[0] in wanted:
                        return str(prev[0])
                    assert prev[0] not in constants.JOBS_FINALIZED, \
                        f"job {job_id} ended ({prev[0]}) before reaching {sorted(wanted)}"

    @contextlib.contextmanager
    def holding_hypervisor_lock(self, node_name: str, instance_name: str) -> Iterator[None]:
        """Hold the node's per-instance hypervisor lock (the ``flock`` its start and stop
        take, lib/hypervisor/base.py): a job starting or stopping the instance there
        then blocks, running and holding its Ganeti locks, until the block ends.

        A blocker the test releases when it is done, instead of a delay long enough for
        the slowest machine (and waited out in full on every other).
        """
        instances = self.node(node_name).paths.run_dir / "instances"
        instances.mkdir(parents=True, exist_ok=True)
        fd = os.open(instances / f".{instance_name}.lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def rpc_runner(self) -> RpcRunner:
        """An RPC runner speaking to the nodes with the master's certificate."""
        return make_rpc_runner(self.master.paths)


def _together(calls: Sequence[Callable[[], None]]) -> None:
    """Run ``calls`` in parallel threads; the first error (in call order) is raised."""
    if len(calls) < 2:
        for call in calls:
            call()
        return
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    for future in futures:
        future.result()


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, both streams (job logs and messages go to either)."""
    return proc.stdout + proc.stderr


def start_cluster(root: str | os.PathLike[str], node_count: int = 3,
                  enabled_hypervisors: list[str] | None = None) -> E2ECluster:
    """A started cluster on a random loopback subnet under ``root``; its RAPI has the users
    admin/secret (write) and reader/secret (read-only)."""
    cluster = E2ECluster.create_and_start(Path(root), node_count=node_count,
                                          enabled_hypervisors=enabled_hypervisors)
    try:
        add_rapi_user(cluster, "admin", "secret", "write,read")
        add_rapi_user(cluster, "reader", "secret", "")
    except BaseException:
        stop_quietly(cluster)
        raise
    return cluster


def stop_quietly(cluster: LocalCluster) -> None:
    cluster.stop(log=lambda _msg: None)


@contextlib.contextmanager
def cluster_pair(root: Path, node_count: int = 2
                 ) -> Iterator[tuple[E2ECluster, E2ECluster]]:
    """Two clusters, "src" and "dst", sharing one cluster domain secret (remote
    exports, move-instance); started side by side (own roots, random subnets)."""
    started: list[E2ECluster] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(start_cluster, root / name, node_count=node_count)
                       for name in ("src", "dst")]
        for future in futures:
            if future.exception() is None:
                started.append(future.result())
        for future in futures:
            future.result()
        src, dst = started
        src.gnt("gnt-cluster", "renew-crypto", "--new-cluster-domain-secret")
        dst.gnt("gnt-cluster", "renew-crypto", "--cluster-domain-secret",
                str(src.master.paths.cluster_domain_secret_file))
        yield src, dst
    finally:
        for cluster in started:
            stop_quietly(cluster)


@pytest.fixture(scope="module")
def rpc(cluster: E2ECluster) -> Iterator[RpcRunner]:
    """An RPC runner speaking to the module's cluster with the master's certificate
    (a fixture: the e2e and reliability conftests import it)."""
    runner = cluster.rpc_runner()
    try:
        yield runner
    finally:
        runner.close()


def cluster_fixture(label: str, node_count: int = 3,
                    enabled_hypervisors: list[str] | None = None
                    ) -> Callable[..., Iterator[E2ECluster]]:
    """A module-scoped fixture starting a real cluster of ``node_count`` nodes.

    Assign it to a name in a test module (or conftest) to define that fixture::

        cluster = cluster_fixture("watcher", node_count=2)
    """
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
        """A started local cluster (E2ECluster) shared by the tests of one module."""
        cluster = start_cluster(tmp_path_factory.mktemp(label), node_count,
                                enabled_hypervisors)
        try:
            yield cluster
        finally:
            stop_quietly(cluster)
    return fixture


def reflink_cluster_fixture(label: str) -> Callable[..., Iterator[E2ECluster]]:
    """Like :func:`cluster_fixture`, with the node roots on the reflink loop filesystem
    (``reflink_fs``): live file-disk snapshots, export bases, cloned generations."""
    @pytest.fixture(scope="module")
    def fixture(reflink_fs: Path) -> Iterator[E2ECluster]:
        """A started 3-node cluster on a btrfs (or XFS) loop filesystem."""
        cluster = start_cluster(reflink_fs / f"{label}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            yield cluster
        finally:
            stop_quietly(cluster)
    return fixture
