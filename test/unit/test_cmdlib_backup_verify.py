"""LUBackupVerify through the real processor and node procedures (loopback RPC, real files)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env

from ganeti import errors, opcodes
from ganeti.backend import NodeContext
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg
from ganeti.backup import blockindex, exportconf
from ganeti.client.gnt_backup import verified_text
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import checksum_file, new_hash

MIB = 1 << 20
DAY1, DAY2 = 1767322800, 1767409200     # 2026-01-02/03 03:00 UTC
GEN1, GEN2 = "20260102T030000Z", "20260103T030000Z"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def node_export(ctx: NodeContext, stamp: int, index: bool = True) -> None:
    """An export as finalize leaves it: two dumps with checksums (and block indexes)."""
    staging = ctx.paths.root / ex.export_prepare(ctx, "inst1").lstrip("/")
    disks = []
    for idx, size in enumerate((8, 4)):
        dump = staging / f"disk{idx}.img"
        dump.write_bytes(os.urandom(MIB))
        os.truncate(dump, size * MIB)           # the rest is a hole, as the receiver leaves it
        data = dump.read_bytes()
        if index:
            digests = [bytes(new_hash("blake3-4m", data[p:p + BLOCK_SIZE]).digest())
                       for p in range(0, len(data), BLOCK_SIZE)]
            blockindex.from_digests(len(data), digests).write(blockindex.index_path(dump))
        disks.append(exportconf.ExportDisk(dump=dump.name, size=size, ivname=f"disk/{idx}",
                                           checksum=checksum_file(dump)))
    info = exportconf.ExportInfo(name="inst1", source="node1", timestamp=stamp, disks=disks)
    ex.export_finalize(ctx, "inst1", exportconf.render(info), True)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 1]))


def verify(env: Env, **fields: Any) -> Any:
    return env.run(opcodes.OpBackupVerify.create(**fields))


def records(env: Env) -> dict[tuple[str, str], Any]:
    listed = env.run(opcodes.OpBackupListGenerations.create())
    return {(g["node"], g["generation"]): g["verify"] for g in listed["generations"]}


def test_verify_reports_bad_blocks_records_and_fails_only_when_asked(env: Env) -> None:
    node_export(env.roots["node3"], DAY1)
    node_export(env.roots["node3"], DAY2)
    node_export(env.roots["node2"], DAY1, index=False)
    older = eg.generations_root(env.roots["node3"], "inst1") / GEN1
    flip(older / "disk1.img", 5)
    report = verify(env)
    assert report["ok"] is False and report["unreachable"] == []
    by_key = {(g["node"], g["generation"]): g for g in report["generations"]}
    assert sorted(by_key) == [("node2", GEN1), ("node3", GEN1), ("node3", GEN2)]
    bad = by_key[("node3", GEN1)]
    assert bad["problems"] == ["disk/1: bad block at offset 0 (block 0, 4.0M)"]
    assert [d["ok"] for d in bad["disks"]] == [True, False]
    assert bad["disks"][1]["bad_blocks"] == [{"block": 0, "offset": 0, "length": 4 * MIB}]
    assert by_key[("node3", GEN2)]["ok"] and by_key[("node2", GEN1)]["ok"]
    assert [d["method"] for d in by_key[("node2", GEN1)]["disks"]] == ["checksum"] * 2
    log = [str(m) for m in env.cbs.log]
    assert f"inst1@{GEN1} on node3: disk/1: bad block at offset 0 (block 0, 4.0M)" in log
    assert any(m.startswith(f"inst1@{GEN1} on node3: disk/0: ok, 8.0M (read 4.0M) in ")
               and m.endswith("block by block") for m in log)
    assert any(m.startswith(f"inst1@{GEN1} on node2: disk/0: no block index") for m in log)
    # recorded with each generation
    recs = records(env)
    assert recs[("node3", GEN1)]["ok"] is False and recs[("node3", GEN1)]["problems"] == \
        bad["problems"]
    assert recs[("node3", GEN2)]["ok"] and recs[("node2", GEN1)]["ok"]
    assert verified_text(recs[("node3", GEN1)]).startswith("BAD (1 problem) 20")
    assert verified_text(recs[("node3", GEN2)]).startswith("ok 20")
    assert verified_text(None) == "-"
    # the newest only, and a scheduled verify that fails the job
    only = verify(env, exports=["inst1"], nodes=["node3"], newest_only=True)
    assert [(g["node"], g["generation"]) for g in only["generations"]] == [("node3", GEN2)]
    with pytest.raises(errors.OpExecError, match=f"inst1@{GEN1} on node3"):
        verify(env, exports=[f"inst1@{GEN1}"], fail_on_problems=True)
    verify(env, exports=[f"inst1@{GEN2}"], fail_on_problems=True)


def test_missing_dump_and_broken_config_are_problems_of_their_generation(env: Env) -> None:
    node_export(env.roots["node3"], DAY1)
    node_export(env.roots["node3"], DAY2)
    older = eg.generations_root(env.roots["node3"], "inst1") / GEN1
    (older / "disk0.img").unlink()
    newest = ex.export_path(env.roots["node3"], "inst1")
    conf = newest / "config.ini"
    conf.write_text(conf.read_text().replace("disk_count = 2", "disk_count = 99"))
    report = verify(env)
    by_gen = {g["generation"]: g for g in report["generations"]}
    assert by_gen[GEN1]["problems"] == ["disk/0: disk0.img is missing"]
    (problem,) = by_gen[GEN2]["problems"]
    assert problem.startswith("config.ini: ") and "disk_count" in problem
    assert records(env)[("node3", GEN2)]["problems"] == [problem]


def test_unverifiable_generation_is_said_and_not_recorded(env: Env) -> None:
    ctx = env.roots["node3"]
    staging = ctx.paths.root / ex.export_prepare(ctx, "old1").lstrip("/")
    (staging / "disk0.img").write_bytes(bytes(MIB))
    info = exportconf.ExportInfo(name="old1", source="node1", timestamp=DAY1, disks=[
        exportconf.ExportDisk(dump="disk0.img", size=1, ivname="disk/0")])
    ex.export_finalize(ctx, "old1", exportconf.render(info), True)
    report = verify(env, exports=["old1"])
    assert report["ok"] and report["generations"][0]["disks"][0]["method"] == "none"
    assert f"old1@{GEN1} on node3: unverifiable (no checksums, no block indexes); nothing" \
           " recorded" in env.cbs.log
    assert records(env)[("node3", GEN1)] is None


@pytest.mark.parametrize(("exports", "code", "text"), [
    (["inst1@"], errors.ECODE_INVAL, "INSTANCE@GENERATION"),
    (["@" + GEN1], errors.ECODE_INVAL, "INSTANCE@GENERATION"),
    (["inst1@20250101T000000Z"], errors.ECODE_NOENT, "inst1@20250101T000000Z"),
    (["nosuch"], errors.ECODE_NOENT, "nosuch"),
])
def test_bad_or_unknown_exports_are_refused_before_anything_is_read(
        env: Env, exports: list[str], code: str, text: str) -> None:
    node_export(env.roots["node3"], DAY1)
    with pytest.raises(errors.OpPrereqError, match=text) as err:
        verify(env, exports=exports)
    assert err.value.args[1] == code
    assert records(env)[("node3", GEN1)] is None
