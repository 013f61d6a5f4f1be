"""The master's control plane at 10, 1,000 and 10,000 instances (issue 20).

For each size a real local cluster (3 nodes: the master and two master
candidates, so the configuration distribution runs too) with the fake
hypervisor.  Populating: one instance is created through the master, then
masterd is stopped, that instance is cloned straight into the configuration
file (new uuids, names and MACs; their disk files do not exist, which no
measured operation looks at) and masterd is started again; so a large cluster
takes seconds to build, not an N^2 burst of creates.

Measured against the running masterd, over LUXI as gnt-* commands talk to it:

* create, modify (beparams) and remove one instance: wall time of the job and
  the master's CPU (utime+stime of /proc/<pid>/stat, before/after); wall the
  median, CPU the mean of ``--rounds`` (CPU comes in 10 ms clock ticks);
* a burst of ``--burst`` creates submitted at once: creates/s and CPU per create
  (and the burst of removes that cleans up);
* listing every instance: ``gnt-instance list`` (default fields, includes the
  client's start-up and the per-node live RPC), and the LUXI ``Query`` of the
  same fields alone (wall and master CPU); the LUXI ``Query`` of every node
  (``gnt-node list``'s fields) and every group (their instance counts);
* the /metrics scrape of the RAPI daemon (every instance's metric fields);
* master RSS (after the operations) and the size of the configuration file;
* the start of masterd with that configuration (``LocalCluster.start``: until it
  answers LUXI, and one ``gnt-node list``).

Ratios are against the 10-instance figures of the same run.  Goals from the
issue: per-operation cost at 10,000 at most 2x the cost at 10; the list of
10,000 under 1 s excluding client start-up; master RSS under 300 MiB.

Run: .venv/bin/python test/bench/bench_control_plane.py [--sizes 10,1000,10000]
[--rounds 5] [--burst 20] [--py-spy SIZE [--py-spy-out PATH]]  (a few minutes at the default sizes;
--py-spy records masterd with py-spy, if installed, during the operations at SIZE,
as collapsed stacks in /tmp/masterd-SIZE.folded; its figures are then skewed)
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import config_journal, constants, daemon, luxi, opcodes
from ganeti.config import ConfigStore
from ganeti.tools.local_cluster import LocalCluster

MIB = 1024 * 1024
TICKS = os.sysconf("SC_CLK_TCK")
LIST_FIELDS = ["name", "hypervisor", "os", "pnode", "status", "oper_ram"]
# gnt-node list's default fields, and a group list's (counts over every instance)
NODE_FIELDS = ["name", "pip", "port", "role", "group", "pinst_cnt"]
GROUP_FIELDS = ["name", "node_cnt", "pinst_cnt"]
TOKEN = base64.b64encode(b"bench:secret").decode()
TEMPLATE = "tmpl00000"


# --- the master process ---------------------------------------------------------------

def master_pid(cluster: LocalCluster) -> int:
    pid = daemon.read_pid(cluster.master.paths.pid_file(constants.MASTERD))
    if pid is None:
        raise RuntimeError("masterd is not running")
    return pid


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(pid: int, fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, master CPU seconds) of ``fn``."""
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds(pid) - cpu0


# --- jobs -----------------------------------------------------------------------------

def wait_job(cl: luxi.Client, job_id: int) -> None:
    prev = None
    while True:
        res = cl.wait_for_job_change_once(job_id, ["status"], prev, None, 60)
        if res is None:
            raise RuntimeError(f"job {job_id} lost")
        if res == luxi.JOB_NOTCHANGED:
            continue
        prev = res[0]
        if prev[0] in constants.JOBS_FINALIZED:
            if prev[0] != constants.OP_STATUS_SUCCESS:
                (row,) = cl.query_jobs([job_id], ["opresult"])
                raise RuntimeError(f"job {job_id} ended {prev[0]}: {row}")
            return


def run_op(cl: luxi.Client, op: opcodes.OpCode) -> None:
    wait_job(cl, cl.submit_job([op]))


def create_op(name: str) -> opcodes.OpCode:
    return opcodes.OpInstanceCreate.create(
        instance_name=name, pnode="node2", disk_template=constants.DT_FILE,
        disks=[{"size": 1}], hypervisor=constants.HT_FAKE, start=False)


# --- building a cluster of N instances ------------------------------------------------

def enable_fake_hypervisor(cluster: LocalCluster) -> None:
    cfg = ConfigStore(cluster.master.paths.cluster_conf_file)
    info = cfg.get_cluster_info()
    if constants.HT_FAKE not in info.enabled_hypervisors:
        info.enabled_hypervisors.append(constants.HT_FAKE)
        cfg.update(info)
    cfg.close()


def stop_masterd(cluster: LocalCluster) -> None:
    pid = master_pid(cluster)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while cluster.is_running(constants.MASTERD, cluster.master):
        if time.monotonic() > deadline:
            raise RuntimeError("masterd did not stop")
        time.sleep(0.05)


def clone_instances(conf_file: Path, count: int) -> None:
    """``count`` copies of the template instance, written straight into the file."""
    data, serial = config_journal.load(conf_file)  # a journal left behind is folded in
    template = next(i for i in data["instances"].values() if i["name"] == TEMPLATE)
    disk_file = template["disks"][0]["logical_id"][1]
    for idx in range(1, count):
        inst = json.loads(json.dumps(template))
        name = f"inst{idx:05d}"
        inst["uuid"] = str(uuid.uuid4())
        inst["name"] = name
        for disk in inst["disks"]:
            disk["uuid"] = str(uuid.uuid4())
            disk["logical_id"] = ["file", disk_file.replace(TEMPLATE, name)]
        for nic in inst["nics"]:
            nic["uuid"] = str(uuid.uuid4())
            nic["mac"] = "aa:00:" + ":".join(f"{idx >> shift & 255:02x}"
                                             for shift in (24, 16, 8, 0))
        data["instances"][inst["uuid"]] = inst
    data["serial_no"] = serial + 1
    config_journal.compact(conf_file, data, serial + 1)


def start_masterd(cluster: LocalCluster) -> float:
    """Seconds until masterd serves LUXI."""
    t0 = time.perf_counter()
    cluster.start(log=lambda _m: None)  # returns once masterd answers LUXI
    return time.perf_counter() - t0


def build(tmp: Path, count: int) -> tuple[LocalCluster, float]:
    cluster = LocalCluster.create_and_start(tmp / f"c{count}", node_count=3)
    users = cluster.master.paths.rapi_users
    users.parent.mkdir(parents=True, exist_ok=True)
    users.write_text("bench secret write,read\n")
    stop_masterd(cluster)
    enable_fake_hypervisor(cluster)
    cluster.start(log=lambda _m: None)
    with luxi.Client(str(cluster.master.paths.master_socket), timeout=300) as cl:
        run_op(cl, create_op(TEMPLATE))
    stop_masterd(cluster)
    clone_instances(cluster.master.paths.cluster_conf_file, count)
    return cluster, start_masterd(cluster)


# --- the measurements -----------------------------------------------------------------

def metrics_scrape(cluster: LocalCluster) -> float:
    host, port = cluster.rapi_address
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=300)
    t0 = time.perf_counter()
    conn.request("GET", "/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    resp = conn.getresponse()
    resp.read()
    took = time.perf_counter() - t0
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"/metrics: HTTP {resp.status}")
    return took


def burst(cl_factory: Callable[[], luxi.Client], ops: list[opcodes.OpCode]) -> None:
    """Submit every op as its own job at once, then wait for all (8 followers)."""
    with cl_factory() as cl:
        job_ids = [cl.submit_job([op]) for op in ops]
    errors: list[BaseException] = []

    def follow(ids: list[int]) -> None:
        try:
            with cl_factory() as cl:
                for job_id in ids:
                    wait_job(cl, job_id)
        except BaseException as err:
            errors.append(err)
    threads = [threading.Thread(target=follow, args=(job_ids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def bench_size(tmp: Path, count: int, rounds: int, burst_size: int,
               profile: Path | None, list_only: bool = False) -> dict[str, float]:
    cluster, startup = build(tmp, count)
    res: dict[str, float] = {"startup": startup}
    spy: subprocess.Popen[bytes] | None = None
    try:
        pid = master_pid(cluster)
        if profile is not None:
            spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", "50", "-f", "raw",
                                    "-o", str(profile)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        socket = str(cluster.master.paths.master_socket)

        def client() -> luxi.Client:
            return luxi.Client(socket, timeout=600)

        res["config_mib"] = cluster.master.paths.cluster_conf_file.stat().st_size / MIB
        with client() as cl:
            # warm-up: the first query and the first job of each kind pay for imports
            cl.query("instance", ["name"], None)
            if list_only:
                return _list_only(res, cluster, pid, cl, count, rounds)
            for op in (create_op("warmup"),
                       opcodes.OpInstanceSetParams.create(instance_name="warmup",
                                                          beparams={"maxmem": 200}),
                       opcodes.OpInstanceRemove.create(instance_name="warmup")):
                run_op(cl, op)
            samples: dict[str, list[tuple[float, float]]] = {
                "create": [], "modify": [], "remove": [], "query": []}
            shipped = candidate_shipments(cluster)
            for rnd in range(rounds):
                name = f"bench{rnd:03d}"
                create, modify, remove = (
                    create_op(name),
                    opcodes.OpInstanceSetParams.create(instance_name=name,
                                                       beparams={"maxmem": 256 + rnd}),
                    opcodes.OpInstanceRemove.create(instance_name=name))
                for key, op in (("create", create), ("modify", modify), ("remove", remove)):
                    samples[key].append(measure(pid, functools.partial(run_op, cl, op)))
                samples["query"].append(measure(
                    pid, lambda: cl.query("instance", LIST_FIELDS, None)))
                for key, what, fields in _OTHER_LISTS:
                    samples.setdefault(key, []).append(measure(
                        pid, functools.partial(cl.query, what, fields, None)))
            rows = len(cl.query("instance", ["name"], None)["data"])
            assert rows == count, (rows, count)
            for key, now, before in zip(("cand_files", "cand_deltas"),
                                        candidate_shipments(cluster), shipped, strict=True):
                res[key] = (now - before) / (3 * rounds)
        for key, values in samples.items():
            res[f"{key}_wall"] = statistics.median(v[0] for v in values)
            # the mean: CPU times come in clock ticks (10 ms), their errors average out
            res[f"{key}_cpu"] = statistics.fmean(v[1] for v in values)
        names = [f"burst{i:03d}" for i in range(burst_size)]
        wall, cpu = measure(pid, lambda: burst(client, [create_op(n) for n in names]))
        res["burst_per_s"] = burst_size / wall
        res["burst_cpu"] = cpu / burst_size
        wall, cpu = measure(pid, lambda: burst(client, [
            opcodes.OpInstanceRemove.create(instance_name=n) for n in names]))
        res["burst_remove_per_s"] = burst_size / wall
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(120)
            spy = None
        res["cli_list_wall"] = cli_list_wall(cluster, count, rounds)
        res["metrics_wall"] = statistics.median(metrics_scrape(cluster) for _ in range(rounds))
        res["rss_mib"] = rss_mib(pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(120)
        cluster.stop(log=lambda _m: None)
    return res


def candidate_shipments(cluster: LocalCluster) -> tuple[int, int]:
    """Whole-file uploads and deltas node2 (a candidate) took so far, from its noded log."""
    node = next(n for n in cluster.nodes if n.name == "node2")
    text = node.paths.log_file(constants.NODED).read_text(errors="replace")
    return text.count("RPC upload_file from"), text.count("RPC append_config_records from")


# the node and group lists: (figure key, resource, fields)
_OTHER_LISTS = [("node_query", "node", NODE_FIELDS), ("group_query", "group", GROUP_FIELDS)]


def cli_list_wall(cluster: LocalCluster, count: int, rounds: int) -> float:
    """Median wall time of ``gnt-instance list`` (client start-up included)."""
    walls = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = cluster.gnt("gnt-instance", "list", "--no-headers", check=True).stdout
        walls.append(time.perf_counter() - t0)
        assert len(out.splitlines()) == count
    return statistics.median(walls)


def _list_only(res: dict[str, float], cluster: LocalCluster, pid: int, cl: luxi.Client,
               count: int, rounds: int) -> dict[str, float]:
    """Only the list figures (LUXI Query, gnt-instance list, /metrics): --list-only."""
    samples = [measure(pid, lambda: cl.query("instance", LIST_FIELDS, None))
               for _ in range(rounds)]
    rows = len(cl.query("instance", ["name"], None)["data"])
    assert rows == count, (rows, count)
    res["query_wall"] = statistics.median(v[0] for v in samples)
    res["query_cpu"] = statistics.fmean(v[1] for v in samples)
    for key, what, fields in _OTHER_LISTS:
        others = [measure(pid, functools.partial(cl.query, what, fields, None))
                  for _ in range(rounds)]
        res[f"{key}_wall"] = statistics.median(v[0] for v in others)
        res[f"{key}_cpu"] = statistics.fmean(v[1] for v in others)
    res["cli_list_wall"] = cli_list_wall(cluster, count, rounds)
    scrapes = [measure(pid, lambda: metrics_scrape(cluster)) for _ in range(rounds)]
    res["metrics_wall"] = statistics.median(v[0] for v in scrapes)
    res["metrics_cpu"] = statistics.fmean(v[1] for v in scrapes)
    res["rss_mib"] = rss_mib(pid)
    return res


ROWS: list[tuple[str, str, float, bool]] = [
    # key, label, scale for printing, ratio printed
    ("create_cpu", "create one: master CPU ms", 1e3, True),
    ("create_wall", "create one: wall ms", 1e3, True),
    ("modify_cpu", "modify one: master CPU ms", 1e3, True),
    ("modify_wall", "modify one: wall ms", 1e3, True),
    ("remove_cpu", "remove one: master CPU ms", 1e3, True),
    ("remove_wall", "remove one: wall ms", 1e3, True),
    ("burst_per_s", "burst: creates/s", 1, True),
    ("burst_cpu", "burst: master CPU ms/create", 1e3, True),
    ("burst_remove_per_s", "burst: removes/s", 1, True),
    ("query_wall", "LUXI Query of all (list fields): wall ms", 1e3, True),
    ("query_cpu", "LUXI Query of all: master CPU ms", 1e3, True),
    ("cli_list_wall", "gnt-instance list (all, with start-up): wall ms", 1e3, True),
    ("node_query_wall", "LUXI Query of nodes (gnt-node list fields): wall ms", 1e3, True),
    ("node_query_cpu", "LUXI Query of nodes: master CPU ms", 1e3, True),
    ("group_query_wall", "LUXI Query of groups (counts): wall ms", 1e3, True),
    ("group_query_cpu", "LUXI Query of groups: master CPU ms", 1e3, True),
    ("metrics_wall", "/metrics scrape: wall ms", 1e3, True),
    ("metrics_cpu", "/metrics scrape: master CPU ms (--list-only)", 1e3, True),
    ("rss_mib", "master RSS MiB", 1, True),
    ("config_mib", "config file MiB", 1, True),
    ("cand_files", "candidate: whole files per create/modify/remove", 1, False),
    ("cand_deltas", "candidate: deltas per create/modify/remove", 1, False),
    ("startup", "masterd start (+ gnt-node list) s", 1, True),
]


def report(results: dict[int, dict[str, float]]) -> None:
    sizes = sorted(results)
    base = sizes[0]
    head = f"{'':50}" + "".join(f"{n:>12,}" for n in sizes) + "".join(
        f"{f'x{n:,}/{base}':>14}" for n in sizes[1:])
    print(head)
    for key, label, scale, with_ratio in ROWS:
        if any(key not in results[n] for n in sizes):
            continue
        line = f"{label:50}" + "".join(f"{results[n][key] * scale:12.1f}" for n in sizes)
        if with_ratio:
            for n in sizes[1:]:
                ratio = results[n][key] / results[base][key] if results[base][key] else 0
                line += f"{ratio:14.2f}"
        print(line)
    top = sizes[-1]
    if "create_cpu" not in results[base]:
        print(f"\nGoal at {top:,}: LUXI list {results[top]['query_wall']:.2f} s (< 1 s)")
        return
    per_op = max(results[top][f"{op}_cpu"] / results[base][f"{op}_cpu"]
                 for op in ("create", "modify", "remove") if results[base][f"{op}_cpu"])
    print(f"\nGoals at {top:,}: per-op CPU ratio {per_op:.2f} (<= 2),"
          f" LUXI list {results[top]['query_wall']:.2f} s (< 1 s),"
          f" RSS {results[top]['rss_mib']:.0f} MiB (< 300)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--py-spy", type=int, default=None, dest="py_spy",
                        help="record masterd with py-spy at this size"
                             " (to /tmp/masterd-SIZE.folded, or --py-spy-out)")
    parser.add_argument("--py-spy-out", default=None, dest="py_spy_out",
                        help="where --py-spy writes its collapsed stacks")
    parser.add_argument("--list-only", action="store_true",
                        help="measure only the list of every instance (LUXI Query,"
                             " gnt-instance list) and the /metrics scrape")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
        for count in sizes:
            profile = (Path(args.py_spy_out or f"/tmp/masterd-{count}.folded")
                       if args.py_spy == count else None)
            t0 = time.perf_counter()
            results[count] = bench_size(Path(tmp), count, args.rounds, args.burst, profile,
                                        args.list_only)
            print(f"# {count:,} instances measured in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
