"""Choosing an incremental export's base on the target node (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext, export_base
from ganeti.backup import blockindex, exportconf, exportmeta
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import new_hash

MIB = 1 << 20


@pytest.fixture()
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path))


def _export(ctx: NodeContext, name: str, disks: list[bytes], *, index: bool = True) -> Path:
    """A newest export as finalize leaves it: config.ini, dumps and their indexes."""
    path = ctx.paths.export_dir / name
    path.mkdir(parents=True)
    checksums = []
    for idx, data in enumerate(disks):
        dump = path / exportconf.dump_name(idx)
        dump.write_bytes(data)
        digests = [bytes(new_hash("blake3-4m", data[pos:pos + BLOCK_SIZE]).digest())
                   for pos in range(0, len(data), BLOCK_SIZE)]
        built = blockindex.from_digests(len(data), digests)
        if index:
            built.write(blockindex.index_path(dump))
        checksums.append(built.checksum)
    info = exportconf.ExportInfo(
        name=name, source="node2", timestamp=1764561300,
        disks=[exportconf.ExportDisk(exportconf.dump_name(i), len(d) // MIB, f"disk/{i}",
                                     checksum=checksums[i]) for i, d in enumerate(disks)])
    (path / "config.ini").write_text(exportconf.render(info))
    return path


def test_first_export_has_no_base(ctx: NodeContext) -> None:
    choice = export_base.export_base_info(ctx, "web1", [8 * MIB])
    assert choice["generation"] is None
    assert choice["disks"] == [{"full": "this is the first export to this node"}]


def test_good_base_per_disk_and_size_change(ctx: NodeContext) -> None:
    path = _export(ctx, "web1", [os.urandom(9 * MIB - MIB), os.urandom(2 * MIB)])
    choice = export_base.export_base_info(ctx, "web1", [8 * MIB, 4 * MIB, MIB])
    assert choice["generation"] == "20251201T035500Z"
    first, grown, extra = choice["disks"]
    assert first["base"] == pathutils.to_wire_name(ctx.paths, path / "disk0.img")
    assert first["checksum"].startswith("blake3-4m:")
    assert "size changed" in grown["full"] and "2 MiB to 4 MiB" in grown["full"]
    assert "has no such disk" in extra["full"]


def test_missing_or_damaged_index_means_full(ctx: NodeContext) -> None:
    path = _export(ctx, "web1", [os.urandom(8 * MIB)], index=False)
    reason = export_base.export_base_info(ctx, "web1", [8 * MIB])["disks"][0]["full"]
    assert "disk0.img.index is missing" in reason
    _export(ctx, "web2", [os.urandom(8 * MIB)])
    index = ctx.paths.export_dir / "web2" / "disk0.img.index"
    index.write_bytes(index.read_bytes()[:-1])
    reason = export_base.export_base_info(ctx, "web2", [8 * MIB])["disks"][0]["full"]
    assert "unusable" in reason and "trailer" in reason
    assert path.is_dir()


def test_index_of_another_dump_is_refused(ctx: NodeContext) -> None:
    path = _export(ctx, "web1", [os.urandom(8 * MIB)])
    other = _export(ctx, "web2", [os.urandom(8 * MIB)])
    os.replace(other / "disk0.img.index", path / "disk0.img.index")
    reason = export_base.export_base_info(ctx, "web1", [8 * MIB])["disks"][0]["full"]
    assert "does not match its config.ini checksum" in reason


@pytest.mark.parametrize("offset", [0, 8 * MIB - 1])
def test_spot_check_catches_rot_in_first_and_last_block(ctx: NodeContext,
                                                        offset: int) -> None:
    path = _export(ctx, "web1", [os.urandom(8 * MIB)])
    with open(path / "disk0.img", "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    reason = export_base.export_base_info(ctx, "web1", [8 * MIB])["disks"][0]["full"]
    assert "fails a spot check" in reason and "does not match the index" in reason


def test_spot_check_reads_the_first_data_block_of_a_sparse_dump(ctx: NodeContext) -> None:
    data = bytearray(16 * MIB)
    data[9 * MIB:9 * MIB + 10] = b"x" * 10
    path = _export(ctx, "web1", [bytes(data)])
    dump = path / "disk0.img"
    with open(dump, "r+b") as handle:           # make it sparse, then rot the data block
        handle.truncate(0)
        handle.truncate(16 * MIB)
        handle.seek(9 * MIB)
        handle.write(b"y" + b"x" * 9)
    reason = export_base.export_base_info(ctx, "web1", [16 * MIB])["disks"][0]["full"]
    assert "block 2" in reason


def test_generation_a_verify_found_bad_is_never_a_base(ctx: NodeContext) -> None:
    path = _export(ctx, "web1", [os.urandom(8 * MIB)])
    meta = exportmeta.ExportMeta(verify={"time": 1, "ok": False, "problems": ["x"]})
    (path / exportmeta.META_FILE).write_text(exportmeta.render(meta))
    reason = export_base.export_base_info(ctx, "web1", [8 * MIB])["disks"][0]["full"]
    assert "a verify found" in reason
