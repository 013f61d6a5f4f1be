"""Query filters: parsing (ganeti.qlang, pyparsing 3) and evaluation (ganeti.query).

Figures, all from one run, as ratios to a baseline measured in the same run:

* parse: ``parse_filter`` per filter text (the parser is built once per process)
  against ``json.loads`` of the same filter's wire form (what the master does to
  every Query anyway), and with pyparsing's packrat cache switched on;
* building the parser once (the cost of the first -F of a process);
* evaluate: a compiled filter over 10,000 items against a hand-written Python
  predicate testing the same thing.

Run: .venv/bin/python test/bench/bench_qlang.py [--rounds 200] [--items 10000]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import pyparsing

from ganeti import qlang, query

TEXTS = [
    'name == "web1"',
    "name =~ m/^web/ and status == 'running'",
    "(be/vcpus == 3 or be/vcpus == 6) and pnode =~ m/^rack/i",
    'not offline and "db" in tags and be/maxmem >= 1024',
    'name =* "web*.example.com" or name !~ /^db/ and not (admin_state == "down")',
]


def _per_call(fn: Callable[[], Any], rounds: int) -> float:
    """Median seconds of one call over ``rounds`` calls (in 5 batches)."""
    batches = []
    per_batch = max(1, rounds // 5)
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_batch):
            fn()
        batches.append((time.perf_counter() - start) / per_batch)
    return statistics.median(batches)


def bench_parse(rounds: int) -> None:
    start = time.perf_counter()
    qlang._build_parser()
    build = time.perf_counter() - start
    qlang.parse_filter(TEXTS[0])  # the cached parser
    wires = [json.dumps(qlang.parse_filter(t)) for t in TEXTS]
    print(f"pyparsing {pyparsing.__version__}; building the parser: {build * 1e3:.1f} ms")
    print(f"{'filter':<76} {'parse us':>9} {'json us':>8} {'ratio':>6}")
    plain = []
    for text, wire in zip(TEXTS, wires, strict=True):
        parse = _per_call(functools.partial(qlang.parse_filter, text), rounds)
        load = _per_call(functools.partial(json.loads, wire), rounds * 10)
        plain.append(parse)
        print(f"{text[:76]:<76} {parse * 1e6:9.0f} {load * 1e6:8.1f} {parse / load:6.0f}")
    pyparsing.ParserElement.enable_packrat()
    packrat = [_per_call(functools.partial(qlang.parse_filter, text), rounds)
               for text in TEXTS]
    print("packrat on / off, per filter:",
          " ".join(f"{p / q:.2f}" for p, q in zip(packrat, plain, strict=True)))


_FIELDS = [
    query.FieldDef("name", "Name", query.QFT_TEXT, "", query.item_getter("name")),
    query.FieldDef("status", "Status", query.QFT_TEXT, "", query.item_getter("status")),
    query.FieldDef("be/vcpus", "VCPUs", query.QFT_NUMBER, "", query.item_getter("vcpus")),
    query.FieldDef("tags", "Tags", query.QFT_OTHER, "", query.item_getter("tags")),
]


def bench_evaluate(items: int, rounds: int) -> None:
    rows = [{"name": f"{'web' if i % 3 else 'db'}{i}.example.com",
             "status": "running" if i % 2 else "ADMIN_down", "vcpus": i % 8,
             "tags": ["a", "db"] if i % 5 == 0 else []} for i in range(items)]
    qfilter = qlang.parse_filter(
        "name =~ m/^web/ and status == 'running' and (be/vcpus >= 4 or 'db' in tags)")
    keep = query.compile_local_filter("bench", _FIELDS, qfilter)
    import re
    web = re.compile("^web")

    def by_hand(r: dict[str, Any]) -> bool:
        return (web.search(r["name"]) is not None and r["status"] == "running"
                and (r["vcpus"] >= 4 or "db" in r["tags"]))

    assert [r for r in rows if keep(r)] == [r for r in rows if by_hand(r)]
    # interleaved, so that the load of a shared machine hits both alike
    ours_runs: list[float] = []
    hand_runs: list[float] = []
    for _ in range(max(5, rounds // 20)):
        for runs, pred in ((ours_runs, keep), (hand_runs, by_hand)):
            start = time.perf_counter()
            [r for r in rows if pred(r)]
            runs.append(time.perf_counter() - start)
    ours, hand = statistics.median(ours_runs), statistics.median(hand_runs)
    compile_ = _per_call(lambda: query.compile_local_filter("bench", _FIELDS, qfilter),
                         rounds)
    print(f"evaluate over {items} items: {ours * 1e3:.1f} ms (by hand {hand * 1e3:.1f} ms,"
          f" ratio {ours / hand:.1f}); compiling the filter: {compile_ * 1e6:.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    bench_evaluate(args.items, args.rounds)
    bench_parse(args.rounds)


if __name__ == "__main__":
    main()
