"""The node side of config.ini: written 0600 as Ganeti's; export_info tells the
import each file's size (disk<N>_size = 0, missing dumps) and the real path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext
from ganeti.backend import export as ex
from ganeti.backend import export_generations as gens
from ganeti.backend.export_layout import export_name
from ganeti.backend.export_verify import export_verify_disk


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path))


def _write_export(ctx: NodeContext, name: str) -> Path:
    staging = ctx.paths.root / ex.export_prepare(ctx, name).lstrip("/")
    (staging / "disk0.img").write_bytes(b"x" * 5120)
    result = ex.export_finalize(ctx, name, "[export]\nversion = 0\ntimestamp = 5\n")
    return ctx.paths.root / result["path"].lstrip("/")


def test_config_ini_is_private(ctx: NodeContext) -> None:
    """[os_private] may hold secrets: 0600, as Ganeti 3.0 leaves it."""
    final = _write_export(ctx, "inst1")
    assert stat.S_IMODE((final / "config.ini").stat().st_mode) == 0o600


def test_export_info_gives_the_named_dumps_sizes_and_real_path(ctx: NodeContext) -> None:
    staging = ctx.paths.root / ex.export_prepare(ctx, "inst1").lstrip("/")
    (staging / "disk0.img").write_bytes(b"x" * 5120)
    (staging / "other").mkdir()
    (staging / "other" / "rawdisk.raw").write_bytes(b"y" * 7)
    os.symlink("/etc/passwd", staging / "link.img")
    os.symlink("/etc", staging / "etc")
    config = ("[export]\nversion = 0\ntimestamp = 5\n\n[instance]\n"
              "disk0_dump = disk0.img\ndisk1_dump = other/rawdisk.raw\n"
              "disk2_dump = missing.img\ndisk3_dump = link.img\n"
              "disk4_dump = ../../../etc/passwd\ndisk5_dump = etc/passwd\n"
              "disk6_dump = other\n")
    final = ctx.paths.root / ex.export_finalize(ctx, "inst1", config)["path"].lstrip("/")
    info = ex.export_info(ctx, "inst1")
    # only regular files below the export: never through a symlink or out of it
    assert info.get("files") == {"disk0.img": 5120, "other/rawdisk.raw": 7}
    assert info.get("real_path") == os.path.realpath(final)
    ginfo = gens.export_generation_info(ctx, "inst1", export_name(final))
    assert ginfo.get("files") == info.get("files")
    assert ginfo.get("real_path") == info.get("real_path")


def test_export_info_of_a_broken_config_lists_no_dumps(ctx: NodeContext) -> None:
    _write_export(ctx, "inst1")          # its config.ini has no [instance]
    assert ex.export_info(ctx, "inst1").get("files") == {}


def test_verify_of_a_disk_without_dump_is_no_problem(ctx: NodeContext) -> None:
    """A Ganeti export may name no dump for a disk (imported blank): nothing to check,
    not a bad export; a disk of size 0 is checked at its dump's size."""
    staging = ctx.paths.root / ex.export_prepare(ctx, "g1").lstrip("/")
    (staging / "rawdisk.raw").write_bytes(b"z" * 5120)
    config = ("[export]\nversion = 0\nos = lenny\n\n[instance]\nname = g1\n"
              "disk0_size = 3\ndisk1_dump = rawdisk.raw\ndisk1_size = 0\n")
    final = ctx.paths.root / ex.export_finalize(ctx, "g1", config)["path"].lstrip("/")
    generation = export_name(final)
    blank = export_verify_disk(ctx, "g1", generation, 0)
    assert blank["ok"] and blank["problems"] == [] and blank["method"] == "none"
    assert "names no dump" in blank["notes"][0]
    sized = export_verify_disk(ctx, "g1", generation, 1)
    assert sized["size"] == 5120 and sized["problems"] == []
