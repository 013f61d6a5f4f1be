"""The cluster as Prometheus sees it: export statistics, jobs, transfers (doc/metrics.md).

Three LUXI queries per scrape, nothing kept between scrapes: the instances
with their export statistics (``export.*`` fields, one query), the jobs'
statuses, the transfers in flight.  The text is rendered by
``prometheus_client`` from a one-shot collector, in the format the scraper
asks for (Prometheus text 0.0.4 by default, OpenMetrics on request).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from ganeti import constants, query
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


class _Snapshot(Collector):
    """The metrics of one scrape, built from the query answers."""

    def __init__(self, instances: Iterable[dict[str, Any]], job_statuses: Iterable[str],
                 transfers: Iterable[dict[str, Any]]) -> None:
        self.instances = list(instances)
        self.jobs = Counter(job_statuses)
        self.transfers = list(transfers)

    def collect(self) -> Iterator[Metric]:
        for name, (doc, fieldname) in INSTANCE_METRICS.items():
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=[INSTANCE_LABEL])
            for row in self.instances:
                value = row.get(fieldname, ALWAYS.get(name))
                if value is not None:
                    family.add_metric([str(row["name"])], float(value))
            yield family
        jobs = GaugeMetricFamily(f"{PREFIX}_{JOBS_METRIC}",
                                 "Jobs in the queue (not archived) by status",
                                 labels=["status"])
        for status in sorted(constants.JOB_STATUS_ALL | set(self.jobs)):
            jobs.add_metric([status], float(self.jobs.get(status, 0)))
        yield jobs
        count = GaugeMetricFamily(f"{PREFIX}_{TRANSFERS_METRIC}",
                                  "Disk streams the master drives now, by kind (local: both"
                                  " ends in this cluster)", labels=["kind"])
        rate = GaugeMetricFamily(f"{PREFIX}_{TRANSFER_RATE_METRIC}",
                                 "Sum of the current rates of the streams in flight",
                                 labels=["kind"])
        kinds = Counter(str(t.get("kind")) for t in self.transfers)
        for kind in sorted(set(TRANSFER_KINDS) | set(kinds)):
            count.add_metric([kind], float(kinds.get(kind, 0)))
            rate.add_metric([kind], sum(float(t.get("rate", 0.0)) for t in self.transfers
                                        if t.get("kind") == kind))
        yield count
        yield rate


def render(instances: Iterable[dict[str, Any]], job_statuses: Iterable[str],
           transfers: Iterable[dict[str, Any]], accept: str | None = None
           ) -> tuple[bytes, str]:
    """The exposition text and its content type (as ``accept`` asks)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(instances, job_statuses, transfers))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


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
    with req.client() as cl:
        instances = cl.query(query.RESOURCE_INSTANCE, list(INSTANCE_FIELDS), None)
        jobs = cl.query(query.RESOURCE_JOB, ["status"], None)
        transfers = cl.query(query.RESOURCE_TRANSFER, ["kind", "rate"], None)
    body, content_type = render(
        _rows(instances), (str(r["status"]) for r in _rows(jobs) if "status" in r),
        _rows(transfers), _header(req.headers, "Accept"))
    return routes.Response(body, 200, content_type)
