"""A real multi-node cluster on one machine, for development, the demo and tests.

Every node is a real ``ganeti-noded`` bound to its own loopback address
(127.x.y.1, .2, ...) with its own root directory (data, run, log and export
dirs), all nodes sharing one port; the master node also runs
``ganeti-masterd`` and ``ganeti-rapi`` (on the master's address, port 5080
when free there, so clusters run side by side).  Nodes other than the master join through the normal
``gnt-node add`` path, so the tool exercises what an administrator does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from ganeti import bootstrap, constants, daemon, pathutils

SOURCE_TOP = Path(__file__).resolve().parents[2]
STATE_FILE = "local-cluster.json"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
WATCHER = "ganeti-watcher"
WATCHER_TIMEOUT = 600.0
# Ganeti's status of an instance whose admin state is up but which does not run
STATUS_ERROR_DOWN = "ERROR_down"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str
    root: str

    @property
    def paths(self) -> pathutils.Paths:
        return pathutils.Paths.for_root(self.root)


def _port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def pick_free_port(addresses: list[str], start: int | None = None) -> int:
    """A port free on every address (random in the ephemeral range unless ``start``)."""
    for _ in range(200):
        port = start if start is not None else random.randint(20000, 60000)
        if all(_port_is_free(a, port) for a in addresses):
            return port
        if start is not None:
            start += 1
    raise RuntimeError("No free port found for the local cluster")


def _rapi_port(address: str, noded_port: int) -> int:
    """Ganeti's 5080 when free on the master's address, else a free one (not noded's)."""
    if noded_port != constants.DEFAULT_RAPI_PORT \
            and _port_is_free(address, constants.DEFAULT_RAPI_PORT):
        return constants.DEFAULT_RAPI_PORT
    for _ in range(200):
        port = pick_free_port([address])
        if port != noded_port:
            return port
    raise RuntimeError("No free port found for the RAPI daemon")


def parse_subnet(text: str, node_count: int = 1) -> str:
    """``127.A.B`` (or ``127.A.B.``) -> ``"127.A.B."``; ValueError naming --subnet otherwise."""
    parts = text.strip().removesuffix(".").split(".")
    if (len(parts) != 3 or parts[0] != "127"
            or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)):
        raise ValueError(f"--subnet: expected a loopback prefix such as 127.2.0, got"
                         f" {text!r}")
    if not 1 <= node_count <= 254:
        raise ValueError(f"--nodes: between 1 and 254 nodes fit a subnet, got {node_count}")
    return ".".join(str(int(p)) for p in parts) + "."


def random_subnet() -> str:
    """A 127.a.b. prefix so that clusters of parallel test runs never collide."""
    return f"127.{random.randint(2, 250)}.{random.randint(0, 250)}."


class LocalCluster:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        state = json.loads((self.root / STATE_FILE).read_text())
        self.cluster_name: str = state["cluster_name"]
        self.port: int = state["port"]
        self.nodes = [NodeSpec(**n) for n in state["nodes"]]
        # clusters made before RAPI get a port at their next start
        self.rapi_port: int | None = state.get("rapi_port")

    def _save_state(self) -> None:
        state = {"cluster_name": self.cluster_name, "port": self.port,
                 "rapi_port": self.rapi_port, "nodes": [asdict(n) for n in self.nodes]}
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.root / STATE_FILE)

    # --- creation -------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike[str], node_count: int = 3,
               subnet: str = "127.1.0.", port: int | None = None,
               cluster_name: str = "cluster.local",
               enabled_hypervisors: list[str] | None = None) -> Self:
        """Lay out roots, create the cluster on node1 and certificates for the others."""
        root_path = Path(root).resolve()
        if (root_path / STATE_FILE).exists():
            raise RuntimeError(f"A local cluster already exists in {root_path}")
        if node_count < 1:
            raise ValueError("A cluster needs at least one node")
        subnet = parse_subnet(subnet, node_count)
        addresses = [f"{subnet}{i}" for i in range(1, node_count + 1)]
        chosen_port = pick_free_port(addresses, port)
        rapi_port = _rapi_port(addresses[0], chosen_port)
        nodes = [NodeSpec(f"node{i}", addresses[i - 1], str(root_path / f"node{i}"))
                 for i in range(1, node_count + 1)]
        made_root = not root_path.exists()
        root_path.mkdir(parents=True, exist_ok=True)
        master = nodes[0]
        try:
            bootstrap.init_cluster(master.paths, cluster_name, master.name, master.address,
                                   noded_port=chosen_port,
                                   enabled_hypervisors=enabled_hypervisors)
            for node in nodes[1:]:
                bootstrap.prepare_node_files(master.paths, node.name, [node.address]) \
                    .install(node.paths)
        except BaseException:
            # no half-made cluster: a retry must not find a root without a state file
            for node in nodes:
                shutil.rmtree(node.root, ignore_errors=True)
            if made_root:
                shutil.rmtree(root_path, ignore_errors=True)
            raise
        (root_path / STATE_FILE).write_text(json.dumps({
            "cluster_name": cluster_name, "port": chosen_port, "rapi_port": rapi_port,
            "nodes": [asdict(n) for n in nodes]}, indent=2))
        return cls(root_path)

    @classmethod
    def create_and_start(cls, root: str | os.PathLike[str], node_count: int = 3,
                         attempts: int = 3,
                         enabled_hypervisors: list[str] | None = None) -> Self:
        """A started cluster on a random loopback subnet (parallel test runs never clash)."""
        last: OSError | None = None
        for _ in range(attempts):
            try:
                cluster = cls.create(root, node_count, subnet=random_subnet(),
                                     enabled_hypervisors=enabled_hypervisors)
            except OSError as err:  # a subnet/port race with a parallel run
                last = err
                continue
            try:
                cluster.start(log=lambda _msg: None)
            except BaseException:
                # no daemons outlive a failed start: nothing would ever stop them
                cluster.stop(log=lambda _msg: None)
                raise
            return cluster
        raise RuntimeError(f"Cannot create a local cluster in {root}: {last}")

    # --- running -------------------------------------------------------------------

    @property
    def master(self) -> NodeSpec:
        return self.nodes[0]

    @property
    def rapi_address(self) -> tuple[str, int]:
        """Where the RAPI daemon listens: the master's address and the cluster's port."""
        if self.rapi_port is None:
            raise RuntimeError(f"The cluster in {self.root} has not been started with RAPI")
        return self.master.address, self.rapi_port

    def env(self, node: NodeSpec | None = None) -> dict[str, str]:
        """Environment for gnt-* commands (they talk to the master of this cluster)."""
        env = dict(os.environ)
        env[pathutils.ROOT_ENV] = (node or self.master).root
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([str(SOURCE_TOP / "scripts"), bindir,
                                       env.get("PATH", "")])
        return env

    def _run_daemon(self, args: list[str], node: NodeSpec) -> None:
        proc = subprocess.run([sys.executable, *args, "--root", node.root],
                              env=self.env(node), capture_output=True, text=True,
                              timeout=START_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} on {node.name} failed to start:"
                               f" {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self, log: Any = print) -> None:
        """Start every daemon that is not running; then add nodes not yet in the config."""
        for node in self.nodes:
            if not self.is_running(constants.NODED, node):
                self._run_daemon([str(SOURCE_TOP / "daemons" / constants.NODED),
                                  "--bind", node.address, "--port", str(self.port)], node)
                log(f"{node.name}: {constants.NODED} listening on {node.address}:{self.port}")
        if not self.is_running(constants.MASTERD, self.master):
            self._run_daemon([str(SOURCE_TOP / "daemons" / constants.MASTERD)], self.master)
            log(f"{self.master.name}: {constants.MASTERD} started")
        if not self.is_running(constants.RAPI, self.master):
            if self.rapi_port is None:
                self.rapi_port = _rapi_port(self.master.address, self.port)
                self._save_state()
            self._run_daemon([str(SOURCE_TOP / "daemons" / constants.RAPI),
                              "--bind", self.master.address, "--port", str(self.rapi_port)],
                             self.master)
            log(f"{self.master.name}: {constants.RAPI} listening on"
                f" {self.master.address}:{self.rapi_port}")
        known = set(self.gnt("gnt-node", "list", "--no-headers", "-o", "name",
                             check=True).stdout.split())
        for node in self.nodes[1:]:
            if node.name not in known:
                self.gnt("gnt-node", "add", "--primary-ip", node.address, node.name,
                         check=True)
                log(f"{node.name}: added to the cluster")

    def is_running(self, daemon_name: str, node: NodeSpec) -> bool:
        pid = daemon.read_pid(node.paths.pid_file(daemon_name))
        return pid is not None and _alive(pid)  # a killed, unreaped daemon is not

    def stop(self, log: Any = print) -> None:
        """SIGTERM every daemon (RAPI, then masterd, then the nodes) and wait; SIGKILL
        what is left.

        Guests of this cluster's instances are stopped too: on a real node
        they would outlive the daemons, here nothing else would ever end them.
        """
        targets: list[tuple[str, NodeSpec]] = [(constants.RAPI, self.master),
                                               (constants.MASTERD, self.master)]
        targets += [(constants.NODED, n) for n in self.nodes]
        pids = []
        for name, node in targets:
            pid = daemon.read_pid(node.paths.pid_file(name))
            if pid is not None and self.is_running(name, node):
                os.kill(pid, signal.SIGTERM)
                pids.append((name, node, pid))
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, node, pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                log(f"{node.name}: {name} did not stop in time, killed")
            else:
                log(f"{node.name}: {name} stopped")
        self._stop_guests(log)

    def _stop_guests(self, log: Any) -> None:
        from ganeti.hypervisor import procutil

        for node in self.nodes:
            for pid in procutil.find_processes(str(node.paths.run_dir / "instances")):
                procutil.kill_and_wait(pid, None, (), STOP_TIMEOUT)
                log(f"{node.name}: guest process {pid} stopped")

    # --- after a restart: the watcher's job ------------------------------------------

    def instances_down(self) -> list[str]:
        """Instances marked up that do not run (ERROR_down), e.g. after stop and start."""
        out = self.gnt("gnt-instance", "list", "--no-headers", "--separator", " ",
                       "-o", "name,status", check=True).stdout
        return [row[0] for row in (line.split() for line in out.splitlines())
                if len(row) == 2 and row[1] == STATUS_ERROR_DOWN]

    def watcher_command(self) -> list[str]:
        return [sys.executable, str(SOURCE_TOP / "daemons" / WATCHER), "--root",
                self.master.root]

    def run_watcher(self, log: Any = print) -> bool:
        """One ganeti-watcher run on the master node, as its cron job would do: it starts
        the instances marked up (no cron runs it for a local cluster)."""
        proc = subprocess.run(self.watcher_command(), env=self.env(), capture_output=True,
                              text=True, timeout=WATCHER_TIMEOUT)
        for line in (proc.stdout + proc.stderr).splitlines():
            log(f"  {line}")
        return proc.returncode == 0

    def bring_back_instances(self, run_watcher: bool = True, log: Any = print,
                             warn: Any = None) -> list[str]:
        """After a restart: say which instances are down and start them through the
        watcher (unless ``run_watcher`` is false); returns those still down."""
        warn = warn or (lambda msg: print(msg, file=sys.stderr))
        down = self.instances_down()
        if not down:
            return []
        names = ", ".join(down)
        how = (f"gnt-instance start NAME (after eval \"$(tools/local-cluster --root"
               f" {self.root} env)\"), or one watcher run: {' '.join(self.watcher_command())}")
        if not run_watcher:
            warn(f"Not running after the restart, though marked up ({STATUS_ERROR_DOWN}):"
                 f" {names}.  On a real cluster ganeti-watcher (cron, every 5 minutes)"
                 f" starts them; here start them with {how}")
            return down
        log(f"Marked up but not running after the restart ({STATUS_ERROR_DOWN}): {names};"
            f" running {WATCHER} once, as its cron job does on a real cluster"
            f" (--no-watcher leaves them down)")
        self.run_watcher(log)
        still = self.instances_down()
        if still:
            warn(f"Still not running ({STATUS_ERROR_DOWN}): {', '.join(still)}; see the"
                 f" watcher's messages above; start them with {how}")
        else:
            log(f"Running again: {names}")
        return still

    def gnt(self, *argv: str, check: bool = False, timeout: float = 300,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a gnt-* command against this cluster, as an administrator would."""
        script = SOURCE_TOP / "scripts" / argv[0]
        proc = subprocess.run([sys.executable, str(script), *argv[1:]], env=self.env(),
                              capture_output=True, text=True, timeout=timeout,
                              input=input_text)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):"
                               f" {proc.stderr.strip() or proc.stdout.strip()}")
        return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster", description=__doc__)
    parser.add_argument("--root", default=os.environ.get("GANETI_LOCAL_CLUSTER",
                                                         "/tmp/ganeti-local-cluster"),
                        help="Directory holding every node's root")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="Create (first time) and start the cluster")
    start.add_argument("--nodes", type=int, default=3)
    start.add_argument("--subnet", default="127.1.0",
                       help="Loopback prefix such as 127.1.0; nodes get .1, .2, ...")
    start.add_argument("--port", type=int, default=constants.DEFAULT_NODED_PORT,
                       help="First port to try for the node daemons")
    start.add_argument("--no-watcher", dest="watcher", action="store_false", default=True,
                       help="After a restart, leave instances marked up but not running"
                            f" ({STATUS_ERROR_DOWN}) down instead of starting them with one"
                            f" {WATCHER} run (what its cron job does on a real cluster)")
    start.add_argument("--enabled-hypervisors", default=None, metavar="HV,...",
                       help="When creating: the hypervisors to enable (default: process;"
                            " e.g. process,kvm for the tiny real guest of tools/build-guest)")
    sub.add_parser("stop", help="Stop every daemon of the cluster")
    sub.add_parser("env", help="Print shell exports for using gnt-* with this cluster")
    sub.add_parser("status", help="Show which daemons run")
    opts = parser.parse_args(argv)
    root = Path(opts.root)
    if opts.command == "start":
        if not (root / STATE_FILE).exists():
            try:
                subnet = parse_subnet(opts.subnet, opts.nodes)
            except ValueError as err:
                parser.error(str(err))
            hypervisors = opts.enabled_hypervisors.split(",") if opts.enabled_hypervisors \
                else None
            LocalCluster.create(root, opts.nodes, subnet, opts.port,
                                enabled_hypervisors=hypervisors)
            print(f"Created a {opts.nodes}-node cluster in {root}")
            LocalCluster(root).start()
            return 0
        cluster = LocalCluster(root)
        cluster.start()
        cluster.bring_back_instances(run_watcher=opts.watcher)
        return 0
    try:
        cluster = LocalCluster(root)
    except FileNotFoundError:
        print(f"No local cluster in {root}", file=sys.stderr)
        return 1
    if opts.command == "stop":
        cluster.stop()
    elif opts.command == "env":
        env = cluster.env()
        print(f"export {pathutils.ROOT_ENV}={env[pathutils.ROOT_ENV]}")
        print(f"export PATH={env['PATH']}")
    elif opts.command == "status":
        for node in cluster.nodes:
            names = [constants.NODED] + ([constants.MASTERD, constants.RAPI]
                                         if node is cluster.master else [])
            states = ", ".join(f"{n} {'running' if cluster.is_running(n, node) else 'stopped'}"
                               for n in names)
            print(f"{node.name} {node.address}:{cluster.port}: {states}")
        if cluster.rapi_port is not None:
            host, port = cluster.rapi_address
            print(f"RAPI: https://{host}:{port}/ (users in"
                  f" {cluster.master.paths.rapi_users})")
    return 0
