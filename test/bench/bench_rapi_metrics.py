"""/metrics at scale: rendering, and the export statistics store behind it.

Figures, all from one run, as ratios to baselines measured in the same run:

* render: ``ganeti.rapi.resources.metrics.render`` (prometheus_client's text
  exposition) of N instances and N jobs, against a hand-written f-string
  exposition of the same samples (what we would write without the library) and
  against ``json.loads`` of the LUXI answers the handler reads anyway;
* query: the master's ``Query("instance")`` of the fields /metrics asks for, on a
  configuration of N instances with N records in the store, against the same query
  without the ``export.*`` fields (what every instance query costs anyway);
* store: loading N records cold (parse + validate), warm (the stat cache), and
  recording one export (rewrite + fsync of the whole file), against
  ``json.loads`` of the same file.

Run: .venv/bin/python test/bench/bench_rapi_metrics.py [--instances 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import constants, pathutils, query
from ganeti.backup import export_stats
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import Disk, Instance
from ganeti.query_resources import instance as qinstance
from ganeti.rapi.resources import metrics

NOW = 1_700_000_000.0


def _median(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _answers(count: int) -> tuple[str, str]:
    inst_rows = [[[query.RS_NORMAL, v] for v in (
        f"inst{i:05d}.example.com", NOW - 1e6, NOW - i, 12.5 + i % 7, 3_000_000 + i,
        9_000_000, 8 << 20, i % 3, NOW - 60)] for i in range(count)]
    fields = [{"name": f, "title": f, "kind": "other", "doc": ""}
              for f in metrics.INSTANCE_FIELDS]
    jobs = [[[query.RS_NORMAL, ("success", "error", "running")[i % 3]]] for i in range(count)]
    return (json.dumps({"fields": fields, "data": inst_rows}),
            json.dumps({"fields": [{"name": "status"}], "data": jobs}))


def _handwritten(instances: list[dict[str, Any]], statuses: list[str]) -> bytes:
    out = []
    for name, (doc, field) in metrics.INSTANCE_METRICS.items():
        full = f"{metrics.PREFIX}_{name}"
        out.append(f"# HELP {full} {doc}\n# TYPE {full} gauge\n")
        for row in instances:
            value = row.get(field, metrics.ALWAYS.get(name))
            if value is not None:
                label = str(row["name"]).replace("\\", "\\\\").replace('"', '\\"')
                out.append(f'{full}{{instance_name="{label}"}} {float(value)!r}\n')
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    out.extend(f'ganeti_jobs{{status="{s}"}} {float(n)!r}\n' for s, n in sorted(counts.items()))
    return "".join(out).encode()


def bench_render(count: int, rounds: int) -> None:
    inst_raw, jobs_raw = _answers(count)

    def rows() -> tuple[list[dict[str, Any]], list[str]]:
        instances = list(metrics._rows(json.loads(inst_raw)))
        statuses = [str(r["status"]) for r in metrics._rows(json.loads(jobs_raw))]
        return instances, statuses

    instances, statuses = rows()
    lib = _median(lambda: metrics.render(instances, statuses, []), rounds)
    hand = _median(lambda: _handwritten(instances, statuses), rounds)
    parse = _median(rows, rounds)
    size = len(metrics.render(instances, statuses, [])[0])
    print(f"render {count} instances + {count} jobs ({size / 1e6:.1f} MB):"
          f" prometheus_client {lib * 1e3:.0f} ms ({lib / hand:.1f}x hand-written"
          f" {hand * 1e3:.0f} ms; {lib / parse:.1f}x json.loads + rows of the LUXI"
          f" answers, {parse * 1e3:.0f} ms)")


def bench_store(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / export_stats.STATS_NAME
        store = export_stats.ExportStats(path)
        for i in range(2):  # a sound file and its .prev
            store.record_success(f"u{i}", "x", finished=NOW, duration=1.0, wire_bytes=1,
                                 data_bytes=1, disk_bytes=1, target="node3")
        doc = json.loads(path.read_text())
        entry = doc["instances"]["u0"]
        doc["instances"] = {f"uuid-{i:05d}": {**entry, "name": f"inst{i:05d}"}
                            for i in range(count)}
        path.write_text(json.dumps(doc, separators=(",", ":")))
        raw = path.read_bytes()

        def cold() -> None:
            export_stats._CACHE.clear()
            store.all()

        base = _median(lambda: json.loads(raw), rounds)
        cold_t = _median(cold, rounds)
        warm_t = _median(store.all, rounds)
        record_t = _median(lambda: store.record_failure("uuid-00001", "inst00001", when=NOW,
                                                        error="e"), rounds)
        print(f"store of {count} records ({len(raw) / 1e6:.1f} MB): cold load"
              f" {cold_t * 1e3:.0f} ms ({cold_t / base:.1f}x json.loads {base * 1e3:.0f} ms),"
              f" warm {warm_t * 1e3:.1f} ms, record one export {record_t * 1e3:.0f} ms")


def bench_query(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = pathutils.Paths.for_root(Path(tmp))
        data = make_initial_config("c.example.com", "node1.example.com", None, "192.0.2.1")
        node = next(iter(data.nodes))
        for i in range(count):
            inst = Instance(name=f"inst{i:05d}.example.com", primary_node=node,
                            disk_template=constants.DT_FILE,
                            disks=[Disk(size=1024, dev_type=constants.DT_FILE,
                                        logical_id=["file", f"/srv/{i}/disk0"],
                                        iv_name="disk/0")])
            data.instances[inst.uuid] = inst
        paths.data_dir.mkdir(parents=True)
        cfg = ConfigStore.initialize(paths.data_dir / "config.data", data)
        store = export_stats.ExportStats.for_paths(paths)
        store.record_failure("x", "x", when=NOW, error="e")
        doc = json.loads(store.path.read_text())
        entry = doc["instances"]["x"]
        doc["instances"] = {uuid: {**entry, "name": inst.name, "last_success": NOW,
                                   "duration": 1.0, "wire_bytes": 1, "data_bytes": 1,
                                   "disk_bytes": 1, "failures": 0}
                            for uuid, inst in cfg.get_all_instances_info().items()}
        store.path.write_text(json.dumps(doc))
        qinstance.register()
        source = type("Source", (), {"context": type("Ctx", (), {
            "cfg": cfg, "rpc": None, "paths": paths})()})()
        fields = list(metrics.INSTANCE_FIELDS)
        store.all()  # parsed once, as after the first scrape
        with_stats = _median(lambda: query.query("instance", fields, source=source), rounds)
        plain = _median(lambda: query.query("instance", ["name", "ctime"], source=source),
                        rounds)
        print(f"Query(instance) of {count} instances, the /metrics fields:"
              f" {with_stats * 1e3:.0f} ms ({with_stats / plain:.2f}x name+ctime only,"
              f" {plain * 1e3:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_render(args.instances, args.rounds)
    bench_query(args.instances, args.rounds)
    bench_store(args.instances, args.rounds)


if __name__ == "__main__":
    main()
