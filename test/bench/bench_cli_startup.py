"""Start-up cost of the list commands: wall time against ``python -c pass`` in the same run.

Run:  .venv/bin/python test/bench/bench_cli_startup.py [--rounds 40] [--source DIR]

A 2-node local cluster (real daemons) gets a few finished jobs; then ``gnt-job
list``, ``gnt-instance list``, ``gnt-backup list`` and the baseline ``python -c
pass`` run in turn, round-robin (so load from other processes on the machine
hits each alike), each as the administrator runs it: a new interpreter, the
script from scripts/.  Reported per command: median and fastest wall time, and
the median as a ratio to the baseline's median.  Goal (issue 18): at most 5x
``python -c pass``.  Also reported: the part of each that is imports (``-X
importtime``, top-level modules summed) and the server's share (the same LUXI
request timed from an already running client).

``--source DIR`` runs the scripts and package of another checkout (e.g. an
older commit unpacked by ``git archive``) against the same cluster, for before
and after figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ganeti import luxi
from ganeti.tools.local_cluster import LocalCluster

TOP = Path(__file__).resolve().parents[2]
GOAL = 5.0
COMMANDS: dict[str, list[str]] = {
    "gnt-job list": ["gnt-job", "list"],
    "gnt-instance list": ["gnt-instance", "list"],
    "gnt-backup list": ["gnt-backup", "list"],
}
BASELINE = "python -c pass"
JOBS = 20


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU is what the command itself used (user + system)."""
    cpu = _cpu_children()
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed, _cpu_children() - cpu


def _import_ms(argv: list[str], env: dict[str, str]) -> float:
    """Milliseconds of imports (top-level entries of -X importtime) of one run."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=True)
    total = 0
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            _self, cumulative, name = line.split(":", 1)[1].split("|")
            # nested modules are indented below their importer; count the top level only
            if cumulative.strip().isdigit() and not name.startswith("  "):
                total += int(cumulative)
    return total / 1000


def _server_ms(address: str) -> dict[str, float]:
    """The LUXI requests of each command, timed from a connected client (server's share)."""
    timings: dict[str, float] = {}
    with luxi.Client(address) as cl:
        calls = {
            "gnt-job list": lambda: cl.query("job", ["id", "status", "summary"], None),
            "gnt-instance list": lambda: cl.query(
                "instance", ["name", "hypervisor", "os", "pnode", "status", "oper_ram"], None),
            "gnt-backup list": lambda: cl.query_exports([], False),
        }
        for name, call in calls.items():
            call()
            runs = []
            for _ in range(10):
                start = time.perf_counter()
                call()
                runs.append(time.perf_counter() - start)
            timings[name] = statistics.median(runs) * 1000
    return timings


def _source_env(base: dict[str, str], source: Path, tmp: Path) -> dict[str, str]:
    """Environment importing the package of ``source`` (its lib/ as "ganeti")."""
    pkg_dir = tmp / "source-py"
    pkg_dir.mkdir()
    (pkg_dir / "ganeti").symlink_to(source / "lib")
    return {**base, "PYTHONPATH": str(pkg_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="Runs of each command")
    parser.add_argument("--source", type=Path, default=None,
                        help="Checkout whose scripts/ and lib/ to measure (default: this one)")
    opts = parser.parse_args(argv)
    source = (opts.source or TOP).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-cli-startup-") as tmp:
        cluster = LocalCluster.create_and_start(Path(tmp) / "c", node_count=2)
        try:
            env = cluster.env()
            # as on an installed system: bytecode cached (the warm-up runs write it)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            if opts.source is not None:
                env = _source_env(env, source, Path(tmp))
            for _ in range(JOBS):
                cluster.gnt("gnt-debug", "delay", "0", check=True)
            argvs = {name: [sys.executable, str(source / "scripts" / cmd[0]), *cmd[1:]]
                     for name, cmd in COMMANDS.items()}
            argvs[BASELINE] = [sys.executable, "-c", "pass"]
            for args in argvs.values():  # warm the page cache and __pycache__
                _timed(args, env)
            times: dict[str, list[float]] = {name: [] for name in argvs}
            cpus: dict[str, list[float]] = {name: [] for name in argvs}
            for _ in range(opts.rounds):
                for name, args in argvs.items():
                    wall, cpu = _timed(args, env)
                    times[name].append(wall)
                    cpus[name].append(cpu)
            imports = {name: statistics.median(_import_ms(args, env) for _ in range(5))
                       for name, args in argvs.items()}
            server = _server_ms(str(cluster.master.paths.master_socket))
        finally:
            cluster.stop(log=lambda _m: None)
    base = statistics.median(times[BASELINE])
    base_cpu = statistics.median(cpus[BASELINE])
    print(f"source: {source}  rounds: {opts.rounds}  cpus: {os.cpu_count()}"
          f"  load: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("wall: median and fastest run; cpu: median user+system of the command;"
          " imports: -X importtime; server: the LUXI request alone")
    print(f"{'command':<20} {'wall':>9} {'fastest':>9} {'cpu':>9} {'imports':>9}"
          f" {'server':>8} {'wall ratio':>11} {'cpu ratio':>10}")
    for name, runs in times.items():
        median = statistics.median(runs)
        ratio = median / base
        cpu = statistics.median(cpus[name])
        goal = "" if name == BASELINE else \
            f"  (goal <= {GOAL:.0f}x: {'met' if ratio <= GOAL else 'NOT met'})"
        server_text = f"{server[name]:6.1f}ms" if name in server else f"{'-':>8}"
        print(f"{name:<20} {median * 1000:7.1f}ms {min(runs) * 1000:7.1f}ms"
              f" {cpu * 1000:7.1f}ms {imports[name]:7.1f}ms {server_text}"
              f" {ratio:10.2f}x {cpu / base_cpu:9.2f}x{goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
