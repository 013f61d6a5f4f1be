"""Node-side export directories: staging, atomic replace, list, remove, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext, RpcFail, export_layout
from ganeti.backend import export as ex


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path))


def _local(ctx: NodeContext, wire_name: str) -> Path:
    """Root-relative names (as procedures return them) on this node."""
    assert wire_name.startswith("/")
    return ctx.paths.root / wire_name.lstrip("/")


def _write_export(ctx: NodeContext, name: str, payload: bytes, config: str) -> Path:
    staging = _local(ctx, ex.export_prepare(ctx, name))
    (staging / "disk0.img").write_bytes(payload)
    result = ex.export_finalize(ctx, name, config)
    assert result["warnings"] == []
    return _local(ctx, result["path"])


def test_first_export_then_replacement(ctx: NodeContext) -> None:
    final = _write_export(ctx, "inst1", b"old", "[export]\nversion = 0\n# one\n")
    assert final == ex.export_path(ctx, "inst1")
    assert (final / "disk0.img").read_bytes() == b"old"
    assert ex.export_list(ctx) == ["inst1"]
    final2 = _write_export(ctx, "inst1", b"new", "[export]\nversion = 0\n# two\n")
    assert final2 == final
    assert (final / "disk0.img").read_bytes() == b"new"
    info = ex.export_info(ctx, "inst1")
    assert "# two" in info["config"]
    assert _local(ctx, info["path"]) == final
    # no staging, trash, journal or previous copy is left behind
    assert ex.export_leftovers(ctx) == []
    assert sorted(p.name for p in ctx.paths.export_dir.iterdir()
                  if not p.name.startswith(".")) == ["inst1"]


def test_replacement_without_rename_exchange(ctx: NodeContext,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _write_export(ctx, "inst1", b"old", "a")

    def no_exchange(a: Path, b: Path) -> None:
        raise OSError(38, "not supported")

    monkeypatch.setattr(export_layout, "_exchange", no_exchange)
    final = _write_export(ctx, "inst1", b"new", "b")
    assert (final / "disk0.img").read_bytes() == b"new"
    assert ex.export_leftovers(ctx) == []


def test_aborted_export_keeps_the_previous_one(ctx: NodeContext) -> None:
    _write_export(ctx, "inst1", b"good", "good config")
    staging = _local(ctx, ex.export_prepare(ctx, "inst1"))
    (staging / "disk0.img").write_bytes(b"half")
    # while staging exists, only the complete export is listed and readable
    assert ex.export_list(ctx) == ["inst1"]
    assert ex.export_info(ctx, "inst1")["config"] == "good config"
    assert ex.export_abort(ctx, "inst1") is True
    assert not staging.exists()
    assert (ex.export_path(ctx, "inst1") / "disk0.img").read_bytes() == b"good"


def test_finalize_without_staging_is_refused(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="No export of inst1 is being written"):
        ex.export_finalize(ctx, "inst1", "x")


def test_remove_and_info_of_missing(ctx: NodeContext) -> None:
    _write_export(ctx, "inst1", b"x", "cfg")
    assert ex.export_remove(ctx, "inst1") is True
    assert ex.export_list(ctx) == []
    with pytest.raises(RpcFail, match="No export of inst1"):
        ex.export_remove(ctx, "inst1")
    with pytest.raises(RpcFail, match="No export of inst1"):
        ex.export_info(ctx, "inst1")


def test_cleanup_removes_leftovers_only(ctx: NodeContext) -> None:
    _write_export(ctx, "keep", b"x", "cfg")
    _write_export(ctx, "keep.new", b"y", "cfg")     # a real export, not a staging dir
    ex.export_prepare(ctx, "crashed")
    (ctx.paths.export_dir / ".removed-old-1").mkdir()
    assert ex.export_leftovers(ctx) == [".removed-old-1", ".staging/crashed"]
    assert ex.export_leftovers(ctx) == [".removed-old-1", ".staging/crashed"]  # only looks
    assert ex.export_cleanup(ctx) == [".removed-old-1", ".staging/crashed"]
    assert ex.export_leftovers(ctx) == []
    assert ex.export_list(ctx) == ["keep", "keep.new"]


@pytest.mark.parametrize("name", ["inst.new", "a" * 200, "b" * 255, "x.new.new", "9-._"])
def test_every_valid_name_can_be_exported(ctx: NodeContext, name: str) -> None:
    """Nothing is appended to the instance name: 255 characters and '.new' work."""
    _write_export(ctx, name, b"one", "[export]\ntimestamp = 1767322800\n")
    staging = _local(ctx, ex.export_prepare(ctx, name))
    (staging / "disk0.img").write_bytes(b"two")
    ex.export_finalize(ctx, name, "[export]\ntimestamp = 1767409200\n", True)
    assert ex.export_list(ctx) == [name]
    assert (ex.export_path(ctx, name) / "disk0.img").read_bytes() == b"two"
    from ganeti.backend import export_generations as eg
    assert [g["newest"] for g in eg.export_generations(ctx, [name])] == [True, False]
    assert eg.export_generation_remove(ctx, name, "20260102T030000Z")
    assert ex.export_remove(ctx, name) is True
    assert ex.export_list(ctx) == [] and ex.export_leftovers(ctx) == []


@pytest.mark.parametrize("name", ["", "../x", "a/b", "/etc", ".hidden", "x\x00y",
                                  "a" * 256, 5, None])
def test_bad_names_are_refused(ctx: NodeContext, name: object) -> None:
    for proc in (ex.export_prepare, ex.export_abort, ex.export_info, ex.export_remove):
        with pytest.raises(RpcFail, match="Invalid instance name"):
            proc(ctx, name)  # type: ignore[arg-type]
    assert not ctx.paths.export_dir.exists() or not any(ctx.paths.export_dir.iterdir())
