"""Instance query rows compute only the fields a query needs (issue 20).

The full row (every field) is the reference: a query for some fields, or
filtering on some, must give the same values as the full row does.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ganeti import query
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import NIC, Cluster, Disk, Instance
from ganeti.query_resources import instance as qinstance


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    data = make_initial_config("cluster.example.com", "node1.example.com", "192.0.2.1",
                               "192.0.2.10", port=11811)
    store = ConfigStore.initialize(tmp_path / "config.data", data)
    master = store.get_master_node()
    for idx in range(3):
        store.add_instance(Instance(
            name=f"inst{idx}.example.com", primary_node=master, os="debian",
            hypervisor="fake", disks=[Disk(dev_type="file", size=128 * (idx + 1), name=f"d{idx}")],
            nics=[NIC(mac=f"aa:00:00:00:00:0{idx}", nicparams={"mode": "bridged",
                                                                "link": f"br{idx}"})],
            beparams={"maxmem": 256 + idx}, tags=[f"t{idx}"]))
    return store


@pytest.fixture
def registered() -> None:
    qinstance.register()


def _source(store: ConfigStore, tmp_path: Path) -> Any:
    return SimpleNamespace(context=SimpleNamespace(cfg=store, rpc=None, paths=None))


def _no_param_filling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a query for cheap fields filled the parameters")
    for name in ("fill_beparams", "fill_hvparams"):
        monkeypatch.setattr(Cluster, name, refuse)
    monkeypatch.setattr(qinstance, "nic_info", refuse)


@pytest.mark.usefixtures("registered")
def test_query_of_cheap_fields_fills_no_parameters(
        store: ConfigStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gnt-instance list's config fields never fill beparams/hvparams nor build NIC info."""
    expected = [[r["name"], r["os"], r["pnode"], r["disk.sizes"][0]]
                for r in qinstance.instance_rows(store)]
    _no_param_filling(monkeypatch)
    fields = ["name", "os", "pnode", "disk.size/0"]
    res = query.query(query.RESOURCE_INSTANCE, fields, None, _source(store, tmp_path))
    assert [[v for _, v in row] for row in res["data"]] == expected
    # an indexed field is read from its list field
    assert [set(row) for row in qinstance.instance_rows(store, fields=fields)] == \
        [{"name", "os", "pnode", "disk.sizes"}] * 3


@pytest.mark.usefixtures("registered")
def test_filter_fields_are_computed_and_match_the_full_row(
        store: ConfigStore, tmp_path: Path) -> None:
    """A field only the filter uses is computed too (be/maxmem here), with its full value."""
    res = query.query(query.RESOURCE_INSTANCE, ["name", "nic.link/0"],
                      [">", "be/maxmem", 256], _source(store, tmp_path))
    assert [[v for _, v in row] for row in res["data"]] == [
        ["inst1.example.com", "br1"], ["inst2.example.com", "br2"]]


def test_every_field_alone_equals_the_full_row(store: ConfigStore) -> None:
    full = qinstance.instance_rows(store)
    for name in qinstance.FIELD_NAMES:
        rows = qinstance.instance_rows(store, fields=[name])
        assert [qinstance.field_value(r, name) for r in rows] == \
            [qinstance.field_value(r, name) for r in full], name
