"""/metrics through the route table (ganeti.rapi.routes.dispatch), LUXI answers faked.

The exposition is parsed with prometheus_client's own parsers; the alert example
(doc/examples/prometheus-alerts.yml) is checked against the names it renders.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from ganeti import constants, query
from ganeti.rapi import routes
from ganeti.rapi.resources import load_all, metrics

ALERTS = Path(__file__).resolve().parents[2] / "doc" / "examples" / "prometheus-alerts.yml"
READER = routes.User("reader")
NOW = 1_700_000_000.0


def answer(fields: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A Query answer; a value of query.UNAVAIL becomes [RS_UNAVAIL, None]."""
    def cell(value: Any) -> list[Any]:
        if value is query.UNAVAIL:
            return [query.RS_UNAVAIL, None]
        return [query.RS_NORMAL, value]
    return {"fields": [{"name": f, "title": f, "kind": "other", "doc": ""} for f in fields],
            "data": [[cell(v) for v in row] for row in rows]}


U = query.UNAVAIL
INSTANCES = [
    # name, ctime, last_success, duration, bytes, data_bytes, disk_bytes, failures, last_failure
    ["web1", NOW - 200_000, NOW - 3600, 12.5, 3_000_000, 9_000_000, 8 << 20, 0, U],
    ["db1", NOW - 200_000, NOW - 100_000, 30.0, 1000, 2000, 4 << 20, 4, NOW - 60],
    ["new1", NOW - 60, U, U, U, U, U, 0, U],
    ["old1", NOW - 200_000, U, U, U, U, U, 1, NOW - 30],
]
JOBS = ["success"] * 5 + ["error"] * 2 + ["running"]
TRANSFERS = [["local", 1000.0], ["local", 500.0], ["remote-send", 10.0]]


class FakeClient:
    def __init__(self, log: list[tuple[str, list[str]]]) -> None:
        self.log = log

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def query(self, what: str, fields: list[str], qfilter: Any = None) -> dict[str, Any]:
        self.log.append((what, fields))
        if what == query.RESOURCE_INSTANCE:
            assert fields == list(metrics.INSTANCE_FIELDS)
            return answer(fields, INSTANCES)
        if what == query.RESOURCE_JOB:
            return answer(fields, [[s] for s in JOBS])
        if what == query.RESOURCE_TRANSFER:
            assert fields == ["kind", "rate"]
            return answer(fields, TRANSFERS)
        raise AssertionError(what)


class FakeBackend:
    def __init__(self) -> None:
        self.log: list[tuple[str, list[str]]] = []

    def client(self) -> Any:
        return FakeClient(self.log)


@pytest.fixture(autouse=True)
def _table() -> None:
    load_all()


def scrape(user: routes.User | None = READER, accept: str | None = None
           ) -> tuple[routes.Response, FakeBackend]:
    backend = FakeBackend()
    headers = {"Accept": accept} if accept else {}
    return routes.dispatch(backend, "GET", "/metrics", "", b"", user, headers), backend


def samples(text: str, parse: Any = text_string_to_metric_families
            ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parse(text) for s in family.samples}


def inst(metric: str, name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"ganeti_{metric}", (("instance_name", name),))


def test_exposition_parses_and_holds_every_figure() -> None:
    resp, backend = scrape()
    assert resp.status == 200
    assert resp.content_type.startswith("text/plain; version=0.0.4")
    got = samples(resp.body.decode())
    assert got[inst("instance_export_last_success_timestamp_seconds", "web1")] == NOW - 3600
    assert got[inst("instance_export_last_duration_seconds", "web1")] == 12.5
    assert got[inst("instance_export_last_sent_bytes", "web1")] == 3_000_000
    assert got[inst("instance_export_last_data_bytes", "web1")] == 9_000_000
    assert got[inst("instance_export_last_disk_bytes", "web1")] == 8 << 20
    assert got[inst("instance_export_consecutive_failures", "web1")] == 0
    assert got[inst("instance_export_consecutive_failures", "db1")] == 4
    assert got[inst("instance_export_last_failure_timestamp_seconds", "db1")] == NOW - 60
    assert got[inst("instance_created_timestamp_seconds", "new1")] == NOW - 60
    assert got[inst("instance_export_consecutive_failures", "old1")] == 1
    # one query per resource, the instances' in one call
    assert [what for what, _ in backend.log] == ["instance", "job", "transfer"]


def test_never_exported_instance_reports_zero_not_nothing() -> None:
    got = samples(scrape()[0].body.decode())
    assert got[inst("instance_export_last_success_timestamp_seconds", "new1")] == 0
    assert got[inst("instance_export_consecutive_failures", "new1")] == 0
    # figures of a success it never had are absent, not 0
    for metric in ("instance_export_last_duration_seconds", "instance_export_last_sent_bytes",
                   "instance_export_last_failure_timestamp_seconds"):
        assert inst(metric, "new1") not in got
        assert inst(metric, "web1" if "failure" not in metric else "db1") in got


def test_jobs_by_status_every_status_present() -> None:
    got = samples(scrape()[0].body.decode())
    jobs = {dict(labels)["status"]: value for (name, labels), value in got.items()
            if name == "ganeti_jobs"}
    assert jobs == {**dict.fromkeys(constants.JOB_STATUS_ALL, 0.0),
                    "success": 5, "error": 2, "running": 1}


def test_transfers_in_flight_by_kind() -> None:
    got = samples(scrape()[0].body.decode())
    count = {dict(labels)["kind"]: value for (name, labels), value in got.items()
             if name == "ganeti_transfers_in_flight"}
    rate = {dict(labels)["kind"]: value for (name, labels), value in got.items()
            if name == "ganeti_transfers_in_flight_rate_bytes_per_second"}
    assert count == {"local": 2, "remote-send": 1, "remote-receive": 0}
    assert rate == {"local": 1500.0, "remote-send": 10.0, "remote-receive": 0.0}


def test_openmetrics_when_asked() -> None:
    resp, _ = scrape(accept="application/openmetrics-text; version=1.0.0")
    assert resp.content_type.startswith("application/openmetrics-text")
    text = resp.body.decode()
    assert text.endswith("# EOF\n")
    got = samples(text, openmetrics_families)
    assert got[inst("instance_export_consecutive_failures", "db1")] == 4


def test_exposed_names_are_the_documented_table() -> None:
    names = {family.name for family in text_string_to_metric_families(
        scrape()[0].body.decode())}
    assert names == set(metrics.metric_names())


def test_permissions() -> None:
    resp, backend = scrape(user=None)
    assert resp.status == 401 and "WWW-Authenticate" in resp.headers
    assert backend.log == []
    resp, backend = scrape(user=routes.User("writer", read=False, write=True))
    assert resp.status == 403 and backend.log == []
    entry = routes.TABLE["/metrics"]
    assert entry.extension and entry.operations["GET"].access == routes.READ


def test_unknown_parameter_refused() -> None:
    backend = FakeBackend()
    resp = routes.dispatch(backend, "GET", "/metrics", "format=json", b"", READER)
    assert resp.status == 400 and b"format" in resp.body and backend.log == []


def test_render_empty_cluster() -> None:
    body, _ = metrics.render([], [], [])
    got = samples(body.decode())
    assert got[("ganeti_jobs", (("status", "queued"),))] == 0
    assert not any(name.startswith("ganeti_instance") for name, _ in got)


# --- the alert example ------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_example_parses_and_names_existing_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {"GanetiNoRecentBackup", "GanetiBackupFailing"}
    exposed = set(metrics.metric_names())
    rendered = {family.name for family in text_string_to_metric_families(
        scrape()[0].body.decode())}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        used = set(re.findall(r"\bganeti_[a-z_]+\b", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, used - exposed
        assert used <= rendered
        # label names the annotations use exist on the series
        for label in re.findall(r"\$labels\.(\w+)", str(rule["annotations"])):
            assert label in (metrics.INSTANCE_LABEL, "status"), label


def test_no_recent_backup_rule_says_26_hours_and_covers_never_exported() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "GanetiNoRecentBackup")
    expr = rule["expr"]
    assert "26 * 3600" in expr
    assert "ganeti_instance_export_last_success_timestamp_seconds" in expr
    # the rule's arithmetic on the figures above: db1 (no success for ~28h) fires, and
    # old1 (never exported, 2 days old); new1 (never exported, 1 minute old) not yet,
    # web1 (1h ago) not
    got = samples(scrape()[0].body.decode())

    def fires(name: str) -> bool:
        last = got[inst("instance_export_last_success_timestamp_seconds", name)]
        created = got[inst("instance_created_timestamp_seconds", name)]
        return NOW - last > 26 * 3600 and NOW - created > 26 * 3600

    assert [n for n in ("web1", "db1", "new1", "old1") if fires(n)] == ["db1", "old1"]
    failing = next(r for r in alert_rules() if r["alert"] == "GanetiBackupFailing")
    threshold = int(re.search(r">=\s*(\d+)", failing["expr"]).group(1))  # type: ignore[union-attr]
    assert got[inst("instance_export_consecutive_failures", "db1")] >= threshold


def test_doc_lists_every_metric_and_field() -> None:
    from ganeti.query_resources import instance as qinstance

    doc = (ALERTS.parents[1] / "metrics.md").read_text()
    listed = set(re.findall(r"^\| `(ganeti_[a-z_]+)` \|", doc, re.MULTILINE))
    assert listed == set(metrics.metric_names())
    fields = set(re.findall(r"^\| `(export\.[a-z_]+)` \|", doc, re.MULTILINE))
    assert fields == set(qinstance.EXPORT_FIELD_NAMES)
