"""Retained export generations: node side (finalize, list, info, remove) and config."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ganeti import errors, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import BackupSchedule


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path))


def _export(ctx: NodeContext, name: str, payload: bytes, stamp: int,
            keep: bool = True) -> None:
    staging = ctx.paths.root / ex.export_prepare(ctx, name).lstrip("/")
    (staging / "disk0.img").write_bytes(payload)
    ex.export_finalize(ctx, name, f"[export]\nversion = 0\ntimestamp = {stamp}\n", keep)


DAY1, DAY2, DAY3 = 1767322800, 1767409200, 1767495600   # 2026-01-02/03/04 03:00 UTC


def test_finalize_keeps_the_replaced_export_as_a_hidden_generation(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _export(ctx, "inst1", b"two", DAY2)
    _export(ctx, "inst1", b"three!", DAY3)
    # Ganeti's layout still holds for the newest; older ones are hidden
    assert ex.export_list(ctx) == ["inst1"]
    assert (ex.export_path(ctx, "inst1") / "disk0.img").read_bytes() == b"three!"
    gens = eg.export_generations(ctx)
    assert [(g["generation"], g["newest"], g["timestamp"]) for g in gens] == [
        ("20260104T030000Z", True, DAY3), ("20260102T030000Z", False, DAY1),
        ("20260103T030000Z", False, DAY2)]
    sizes = {g["generation"]: g["size"] for g in gens}
    assert sizes["20260104T030000Z"] > sizes["20260102T030000Z"]
    info = eg.export_generation_info(ctx, "inst1", "20260102T030000Z")
    assert (ctx.paths.root / info["path"].lstrip("/") / "disk0.img").read_bytes() == b"one"
    assert f"timestamp = {DAY1}" in info["config"]
    # the newest can be addressed by its generation name too
    newest = eg.export_generation_info(ctx, "inst1", "20260104T030000Z")
    assert newest["path"].endswith("/inst1")


def test_plain_finalize_keeps_ganeti_semantics(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1, keep=False)
    _export(ctx, "inst1", b"two", DAY2, keep=False)
    assert [g["generation"] for g in eg.export_generations(ctx)] == ["20260103T030000Z"]
    assert ex.export_list(ctx) == ["inst1"] and ex.export_leftovers(ctx) == []
    assert not (ctx.paths.export_dir / eg.GENERATIONS_DIR).exists()


def test_same_second_generations_get_distinct_names(ctx: NodeContext) -> None:
    for payload in (b"a", b"b", b"c"):
        _export(ctx, "inst1", payload, DAY1)
    names = sorted(g["generation"] for g in eg.export_generations(ctx) if not g["newest"])
    assert names == ["20260102T030000Z", "20260102T030000Z-1"]


def test_remove_older_generation_but_never_the_newest(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _export(ctx, "inst1", b"two", DAY2)
    assert eg.export_generation_remove(ctx, "inst1", "20260102T030000Z")
    with pytest.raises(RpcFail, match="newest export"):
        eg.export_generation_remove(ctx, "inst1", "20260103T030000Z")
    with pytest.raises(RpcFail, match="No export generation"):
        eg.export_generation_remove(ctx, "inst1", "20260102T030000Z")
    assert [g["newest"] for g in eg.export_generations(ctx, ["inst1"])] == [True]
    assert eg.export_generations(ctx, ["other"]) == []


@pytest.mark.parametrize("generation", ["../../etc", "", "latest", "20260102T030000Z/..",
                                        None, 5])
def test_bad_generation_names_are_refused(ctx: NodeContext, generation: object) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    with pytest.raises(RpcFail, match="Invalid export generation"):
        eg.export_generation_info(ctx, "inst1", generation)  # type: ignore[arg-type]


def test_aborted_export_leaves_generations_untouched(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _export(ctx, "inst1", b"two", DAY2)
    before = eg.export_generations(ctx)
    ex.export_prepare(ctx, "inst1")
    ex.export_abort(ctx, "inst1")
    ex.export_cleanup(ctx)
    assert eg.export_generations(ctx) == before


def test_config_without_schedules_loads_and_schedules_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    data = make_initial_config("c.example.com", "n1.example.com", None, "192.0.2.1")
    raw = json.loads(data.to_json())
    raw.pop("backup_schedules")      # a configuration written before schedules existed
    path.write_text(json.dumps(raw))
    store = ConfigStore(path)
    assert store.get_backup_schedules() == {}
    store.put_backup_schedule(BackupSchedule(name="n", instances=["a"], target_node="n1",
                                             cron="0 3 * * *"), create=True)
    with pytest.raises(errors.OpPrereqError, match="already exists"):
        store.put_backup_schedule(BackupSchedule(name="n", cron="* * * * *"), create=True)
    sched = ConfigStore(path).get_backup_schedules()["n"]
    created = sched.ctime
    time.sleep(0.01)
    sched.enabled = False
    store.put_backup_schedule(sched, create=False)
    again = ConfigStore(path).get_backup_schedules()["n"]
    assert not again.enabled and again.ctime == created and again.serial_no == 1
    store.remove_backup_schedule("n")
    with pytest.raises(errors.OpPrereqError, match="does not exist"):
        store.remove_backup_schedule("n")
    assert ConfigStore(path).get_backup_schedules() == {}
