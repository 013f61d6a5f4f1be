"""The cluster as Prometheus sees it: export statistics, jobs, transfers (doc/metrics.md).

Three LUXI queries per scrape, nothing kept between scrapes: the instances
with their export statistics (``export.*`` fields, one query), the jobs'
statuses, the transfers in flight.  The format is the one the scraper asks
for, as ``prometheus_client`` chooses it (Prometheus text 0.0.4 by default,
OpenMetrics on request); those two are written here in one pass over the
answers, byte for byte as the library's encoders write them (which build an
object per sample: 1.2 s at 10,000 instances), any other by the library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ganeti import constants, gc_pause, query
from ganeti.rapi import routes

PREFIX = "ganeti"
# Prometheus gives every scraped series an "instance" label (the scraped target):
# ours would be renamed, so the instance's name is "instance_name"
INSTANCE_LABEL = "instance_name"
INSTANCE_FIELDS = ("name", "ctime", "export.last_success", "export.duration",
                   "export.bytes", "export.data_bytes", "export.disk_bytes",
                   "export.failures", "export.last_failure")
TRANSFER_KINDS = ("local", "remote-send", "remote-receive")
# what a scraper gets unless it asks for OpenMetrics
TEXT_FORMAT = "text/plain; version=0.0.4"
TEXT_CONTENT_TYPE = f"{TEXT_FORMAT}; charset=utf-8"

# name (without the prefix) -> (help, the instance query field); one table, so the
# docs and the alert example's test see the same names
INSTANCE_METRICS: dict[str, tuple[str, str]] = {
    "instance_created_timestamp_seconds": (
        "When the instance was created (alerts can give new instances time for a first"
        " export)", "ctime"),
    "instance_export_last_success_timestamp_seconds": (
        "When the instance's last successful export was committed; 0: never exported",
        "export.last_success"),
    "instance_export_last_duration_seconds": (
        "Seconds the last successful export took (absent: never exported)",
        "export.duration"),
    "instance_export_last_sent_bytes": (
        "Bytes the last successful export sent over the network, compressed, framing"
        " included (incremental exports send only changed blocks)", "export.bytes"),
    "instance_export_last_data_bytes": (
        "Data bytes the last successful export copied, before compression",
        "export.data_bytes"),
    "instance_export_last_disk_bytes": (
        "Total size of the disks the last successful export holds", "export.disk_bytes"),
    "instance_export_consecutive_failures": (
        "Failed exports since the last successful one (reset by a success)",
        "export.failures"),
    "instance_export_last_failure_timestamp_seconds": (
        "When the instance's last export failed (absent: none failed)",
        "export.last_failure"),
}
# present for every instance, with this value when the field has none
ALWAYS: dict[str, float] = {"instance_created_timestamp_seconds": 0.0,
                            "instance_export_last_success_timestamp_seconds": 0.0,
                            "instance_export_consecutive_failures": 0.0}
JOBS_METRIC = "jobs"
TRANSFERS_METRIC = "transfers_in_flight"
TRANSFER_RATE_METRIC = "transfers_in_flight_rate_bytes_per_second"


def metric_names() -> list[str]:
    """Every metric name /metrics exposes (with the prefix)."""
    names = [*INSTANCE_METRICS, JOBS_METRIC, TRANSFERS_METRIC, TRANSFER_RATE_METRIC]
    return [f"{PREFIX}_{name}" for name in names]


def _rows(answer: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """A Query answer's rows as dicts; values without data are left out."""
    names = [f["name"] for f in answer["fields"]]
    for row in answer["data"]:
        yield {name: value for name, (status, value) in zip(names, row, strict=True)
               if status == query.RS_NORMAL and value is not None}


# one metric family: name (with the prefix), help, label name, (label value, value)s
Family = tuple[str, str, str, list[tuple[str, float]]]
# the instance metrics' query fields, in INSTANCE_METRICS order
_METRIC_FIELDS = tuple(fieldname for _doc, fieldname in INSTANCE_METRICS.values())


def _answer_columns(answer: Mapping[str, Any], names: Iterable[str]
                    ) -> Iterator[list[Any]]:
    """Per row of a Query answer, the values of ``names`` (None: no value), in one pass
    and without a dict per row."""
    index = {f["name"]: i for i, f in enumerate(answer["fields"])}
    positions = [index[name] for name in names]
    for row in answer["data"]:
        values = []
        for pos in positions:
            status, value = row[pos]
            values.append(value if status == query.RS_NORMAL else None)
        yield values


def _instance_families(rows: Iterable[Sequence[Any]]) -> list[Family]:
    """The per-instance families from rows ``[name, value of each _METRIC_FIELDS]``."""
    families: list[Family] = [(f"{PREFIX}_{name}", doc, INSTANCE_LABEL, [])
                              for name, (doc, _field) in INSTANCE_METRICS.items()]
    columns = [(family[3].append, ALWAYS.get(name))
               for family, name in zip(families, INSTANCE_METRICS, strict=True)]
    for row in rows:
        label = str(row[0])
        for (add, default), value in zip(columns, row[1:], strict=True):
            if value is None:
                value = default
                if value is None:
                    continue
            add((label, float(value)))
    return families


def _other_families(job_statuses: Iterable[str],
                    transfers: Iterable[Mapping[str, Any]]) -> list[Family]:
    counts = Counter(job_statuses)
    jobs: Family = (f"{PREFIX}_{JOBS_METRIC}", "Jobs in the queue (not archived) by status",
                    "status", [(status, float(counts.get(status, 0)))
                               for status in sorted(constants.JOB_STATUS_ALL | set(counts))])
    flows = list(transfers)
    kinds = Counter(str(t.get("kind")) for t in flows)
    count: Family = (f"{PREFIX}_{TRANSFERS_METRIC}",
                     "Disk streams the master drives now, by kind (local: both ends in this"
                     " cluster)", "kind", [])
    rate: Family = (f"{PREFIX}_{TRANSFER_RATE_METRIC}",
                    "Sum of the current rates of the streams in flight", "kind", [])
    for kind in sorted(set(TRANSFER_KINDS) | set(kinds)):
        count[3].append((kind, float(kinds.get(kind, 0))))
        rate[3].append((kind, sum(float(t.get("rate", 0.0)) for t in flows
                                  if t.get("kind") == kind)))
    return [jobs, count, rate]


class _Snapshot(Collector):
    """The families of one scrape for prometheus_client's encoders."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for name, doc, label, samples in self.families:
            family = GaugeMetricFamily(name, doc, labels=[label])
            for value_label, value in samples:
                family.add_metric([value_label], value)
            yield family


# the library's formatting of a value (Go's), so that both ways give the same text
_go_float: Callable[[float], str] = floatToGoString


def _escape_label(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _exposition(families: list[Family], openmetrics: bool) -> bytes:
    """The text prometheus_client's encoders write for these gauge families (their
    Prometheus 0.0.4 or OpenMetrics 1.0.0 format), written directly: the library
    builds a sample object per value, 1.2 s for 10,000 instances (issue 20).
    test_rapi_metrics_exposition.py checks that both give the same bytes."""
    out: list[str] = []
    add = out.append
    for name, doc, label, samples in families:
        doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
        if openmetrics:
            doc = doc.replace('"', '\\"')
        add(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        prefix = f'{name}{{{label}="'
        out.extend(f'{prefix}{_escape_label(value_label)}"}} {_go_float(value)}\n'
                   for value_label, value in samples)
    if openmetrics:
        add("# EOF\n")
    return "".join(out).encode("utf-8")


def _encode(families: list[Family], accept: str | None) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept or "")
    base = content_type.split(";")[0]
    if content_type == TEXT_CONTENT_TYPE or (
            base == "application/openmetrics-text" and "version=1.0.0" in content_type):
        return _exposition(families, base != "text/plain"), content_type
    # another version or escaping: the library (our names need no escaping anyway)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return encoder(registry), content_type


def render(instances: Iterable[dict[str, Any]], job_statuses: Iterable[str],
           transfers: Iterable[dict[str, Any]], accept: str | None = None
           ) -> tuple[bytes, str]:
    """The exposition text and its content type (as ``accept`` asks)."""
    rows = ([row["name"], *(row.get(f) for f in _METRIC_FIELDS)] for row in instances)
    return _encode([*_instance_families(rows), *_other_families(job_statuses, transfers)],
                   accept)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


@routes.route("/metrics", "GET", access=routes.READ, extension=True,
              result="the metrics in Prometheus' text format (OpenMetrics if the Accept"
                     " header asks for it)",
              result_type=TEXT_FORMAT,
              result_schema={"type": "string", "description": "Prometheus text format 0.0.4"
                             " (https://prometheus.io/docs/instrumenting/exposition_formats/)"})
def metrics(req: routes.Request) -> routes.Response:
    """Prometheus metrics: export statistics per instance, jobs by status, transfers.

    Per instance (label ``instance_name``): the time, duration and bytes of the
    last successful export and the failures since (``export.*`` query fields);
    an instance never exported shows a last success at 0, so "no backup in 26
    hours" fires for it too.  The job queue by status and the disk streams in
    flight.  An alert example: doc/examples/prometheus-alerts.yml.
    """
    # one pass over each answer, no dict per instance; the collector stays paused
    # while the 10,000 rows are alive (ganeti.gc_pause)
    with gc_pause.paused():
        with req.client() as cl:
            instances = cl.query(query.RESOURCE_INSTANCE, list(INSTANCE_FIELDS), None)
            jobs = cl.query(query.RESOURCE_JOB, ["status"], None)
            transfers = cl.query(query.RESOURCE_TRANSFER, ["kind", "rate"], None)
        families = _instance_families(_answer_columns(instances,
                                                      ("name", *_METRIC_FIELDS)))
        del instances
        families += _other_families(
            (str(r["status"]) for r in _rows(jobs) if "status" in r), _rows(transfers))
        body, content_type = _encode(families, _header(req.headers, "Accept"))
    return routes.Response(body, 200, content_type)
