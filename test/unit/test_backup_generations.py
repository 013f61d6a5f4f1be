"""Retained export generations: node side (finalize, list, info, remove) and config."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from ganeti import errors, pathutils
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg
from ganeti.backup import exportmeta
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


# --- protection and notes (sidecar in the export's directory) -----------------------


def _meta_file(path: Path) -> Path:
    return path / exportmeta.META_FILE


def _by_name(ctx: NodeContext) -> dict[str, Mapping[str, object]]:
    return {g["generation"]: g for g in eg.export_generations(ctx)}


def test_protection_and_note_move_with_the_generation(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    newest = ex.export_path(ctx, "inst1")
    config_before = (newest / "config.ini").read_text()
    assert eg.export_generation_modify(ctx, "inst1", None, True, "before the upgrade") == {
        "protected": True, "note": "before the upgrade"}
    # config.ini stays exactly as Ganeti writes it; the sidecar holds the metadata
    assert (newest / "config.ini").read_text() == config_before
    assert json.loads(_meta_file(newest).read_text()) == {
        "version": 1, "protected": True, "note": "before the upgrade"}
    _export(ctx, "inst1", b"two", DAY2)
    gens = _by_name(ctx)
    old = gens["20260102T030000Z"]
    assert (old["newest"], old["protected"], old["note"], old["meta_problem"]) == (
        False, True, "before the upgrade", None)
    assert (gens["20260103T030000Z"]["protected"], gens["20260103T030000Z"]["note"]) == (
        False, "")
    assert not _meta_file(newest).exists()
    retired = eg.generations_root(ctx, "inst1") / "20260102T030000Z"
    assert _meta_file(retired).is_file()
    # only the note changes; protection is kept
    eg.export_generation_modify(ctx, "inst1", "20260102T030000Z", None, "kept for audit")
    assert (_by_name(ctx)["20260102T030000Z"]["protected"],
            _by_name(ctx)["20260102T030000Z"]["note"]) == (True, "kept for audit")


def test_protected_generations_and_exports_cannot_be_removed(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _export(ctx, "inst1", b"two", DAY2)
    eg.export_generation_modify(ctx, "inst1", "20260102T030000Z", True, None)
    eg.export_generation_modify(ctx, "inst1", "20260103T030000Z", True, None)   # newest
    with pytest.raises(RpcFail, match=r"is protected.*gnt-backup unprotect"
                                      r" inst1@20260102T030000Z"):
        eg.export_generation_remove(ctx, "inst1", "20260102T030000Z")
    with pytest.raises(RpcFail, match=r"export of inst1 is protected.*gnt-backup unprotect"
                                      r" inst1'"):
        ex.export_remove(ctx, "inst1")
    assert sorted(_by_name(ctx)) == ["20260102T030000Z", "20260103T030000Z"]
    assert (ex.export_path(ctx, "inst1") / "disk0.img").read_bytes() == b"two"
    eg.export_generation_modify(ctx, "inst1", "20260102T030000Z", False, None)
    # nothing set any more: no sidecar left behind
    assert not _meta_file(eg.generations_root(ctx, "inst1") / "20260102T030000Z").exists()
    assert eg.export_generation_remove(ctx, "inst1", "20260102T030000Z")
    eg.export_generation_modify(ctx, "inst1", None, False, None)
    assert ex.export_remove(ctx, "inst1")
    assert eg.export_generations(ctx) == []


@pytest.mark.parametrize(("content", "problem"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "does not hold a JSON object"),
    (b"[" * 8000 + b"]" * 8000, "not valid JSON"),
    (b'{"protected": "yes", "note": "x"}', "protected: must be true or false"),
    (b" " * (exportmeta.MAX_META_BYTES + 1), "larger than"),
])
def test_hostile_sidecar_keeps_listing_and_counts_as_protected(
        ctx: NodeContext, content: bytes, problem: str) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _meta_file(ex.export_path(ctx, "inst1")).write_bytes(content)
    gen = eg.export_generations(ctx)[0]
    assert gen["protected"] is True and problem in str(gen["meta_problem"])
    with pytest.raises(RpcFail, match="counted as protected"):
        ex.export_remove(ctx, "inst1")
    # an explicit unprotect writes a clean sidecar (here: none)
    eg.export_generation_modify(ctx, "inst1", None, False, None)
    gen = eg.export_generations(ctx)[0]
    assert (gen["protected"], gen["meta_problem"]) == (False, None)
    assert ex.export_remove(ctx, "inst1")


@pytest.mark.parametrize(("note", "problem"), [
    (42, "note: must be text"),
    ("x" * (exportmeta.NOTE_MAX + 1), f"note: at most {exportmeta.NOTE_MAX} characters"),
    ("two\nlines", "note: must be one line"),
])
def test_bad_stored_note_is_dropped_with_a_warning(ctx: NodeContext, note: object,
                                                   problem: str) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _meta_file(ex.export_path(ctx, "inst1")).write_text(
        json.dumps({"protected": False, "note": note}))
    gen = eg.export_generations(ctx)[0]
    assert (gen["protected"], gen["note"]) == (False, "")
    assert problem in str(gen["meta_problem"])
    with pytest.raises(RpcFail, match=problem.split(":")[0]):
        eg.export_generation_modify(ctx, "inst1", None, None, note)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "problem"), [
    ("dir", "not a regular file"), ("fifo", "not a regular file"),
    ("symlink", "cannot read"),
])
def test_sidecar_that_cannot_be_read_counts_as_protected(ctx: NodeContext, kind: str,
                                                         problem: str) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    meta = _meta_file(ex.export_path(ctx, "inst1"))
    if kind == "dir":
        meta.mkdir()
    elif kind == "fifo":
        os.mkfifo(meta)          # a blocking open would hang the listing
    else:
        (ctx.paths.root / "elsewhere").write_text('{"protected": false}')
        meta.symlink_to(ctx.paths.root / "elsewhere")
    gen = eg.export_generations(ctx)[0]
    assert gen["protected"] is True and problem in str(gen["meta_problem"])


def test_modify_of_a_generation_removed_meanwhile_leaves_nothing(
        ctx: NodeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    _export(ctx, "inst1", b"two", DAY2)
    older = eg.generations_root(ctx, "inst1") / "20260102T030000Z"
    real_read = export_meta.read

    def read_then_prune(path: Path) -> exportmeta.ExportMeta:
        meta = real_read(path)
        ex.remove_tree(path)        # a racing prune of the same generation
        return meta

    monkeypatch.setattr(export_meta, "read", read_then_prune)
    with pytest.raises(RpcFail, match="was removed while"):
        eg.export_generation_modify(ctx, "inst1", "20260102T030000Z", True, None)
    assert not older.exists()


def test_modify_refuses_bad_values_and_unknown_generations(ctx: NodeContext) -> None:
    _export(ctx, "inst1", b"one", DAY1)
    with pytest.raises(RpcFail, match="protected: must be true or false"):
        eg.export_generation_modify(ctx, "inst1", None, "yes", None)  # type: ignore[arg-type]
    with pytest.raises(RpcFail, match="No export generation 20990101T000000Z"):
        eg.export_generation_modify(ctx, "inst1", "20990101T000000Z", True, None)
    with pytest.raises(RpcFail, match="No export of other"):
        eg.export_generation_modify(ctx, "other", None, True, None)
    with pytest.raises(RpcFail, match="Invalid export generation"):
        eg.export_generation_modify(ctx, "inst1", "../inst1", True, None)
    assert not _meta_file(ex.export_path(ctx, "inst1")).exists()
