"""gnt-backup verify, node side: real sparse dumps, block indexes and sidecars on disk."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg
from ganeti.backend import export_verify as ev
from ganeti.backup import blockindex, exportconf, exportmeta
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import checksum_file, new_hash

MIB = 1 << 20

SIZE = 10 * MIB          # blocks 0 and 1 of 4 MiB, block 2 of 2 MiB


def _write_dump(path: Path) -> None:
    """Data in block 0 and at the start of block 2; block 1 and the rest are holes."""
    with open(path, "wb") as handle:
        handle.write(os.urandom(MIB))
        handle.seek(2 * BLOCK_SIZE)
        handle.write(os.urandom(MIB // 2))
        handle.truncate(SIZE)


def _index_of(path: Path, algorithm: str = "blake3-4m") -> blockindex.BlockIndex:
    """Written the plain way: every block read whole (independent of the code under test)."""
    data = path.read_bytes()
    digests = [bytes(new_hash(algorithm, data[pos:pos + BLOCK_SIZE]).digest())
               for pos in range(0, len(data), BLOCK_SIZE)]
    return blockindex.from_digests(len(data), digests, algorithm=algorithm)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def dump(tmp_path: Path) -> tuple[Path, str]:
    """A dump with its index, and the checksum config.ini records for it."""
    path = tmp_path / "disk0.img"
    _write_dump(path)
    index = _index_of(path)
    index.write(blockindex.index_path(path))
    checksum = checksum_file(path)
    assert index.checksum == checksum      # the design's contract, independently computed
    return path, checksum


def test_good_dump_is_ok_block_by_block_and_holes_are_not_read(
        dump: tuple[Path, str]) -> None:
    path, checksum = dump
    res = ev.verify_dump(path, SIZE, checksum)
    assert (res["ok"], res["method"], res["problems"], res["bad_block_count"]) == (
        True, "index", [], 0)
    # block 1 is all hole: never read
    assert res["read_bytes"] == BLOCK_SIZE + 2 * MIB


@pytest.mark.parametrize(("offset", "block", "length"), [
    (5, 0, BLOCK_SIZE),
    (BLOCK_SIZE + 123, 1, BLOCK_SIZE),             # inside a hole: the hole gets data
    (2 * BLOCK_SIZE, 2, 2 * MIB),                  # the first byte of the short last block
    (SIZE - 1, 2, 2 * MIB),
])
def test_flipped_byte_reports_exactly_its_block(dump: tuple[Path, str], offset: int,
                                                block: int, length: int) -> None:
    path, checksum = dump
    _flip(path, offset)
    res = ev.verify_dump(path, SIZE, checksum, 0, "disk/0")
    assert not res["ok"]
    assert res["bad_blocks"] == [{"block": block, "offset": block * BLOCK_SIZE,
                                  "length": length}]
    assert res["bad_block_count"] == 1
    # the located block is the whole story: no separate checksum problem
    assert res["problems"] == []


def test_many_bad_blocks_are_counted_exactly_and_listed_up_to_the_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "disk0.img"
    _write_dump(path)
    index = _index_of(path)
    index.write(blockindex.index_path(path))
    for block in range(3):
        _flip(path, block * BLOCK_SIZE + 7)
    monkeypatch.setattr(ev, "MAX_BAD_BLOCKS", 2)
    res = ev.verify_dump(path, SIZE, index.checksum)
    assert res["bad_block_count"] == 3 and [b["block"] for b in res["bad_blocks"]] == [0, 1]


def test_truncated_dump_is_a_problem_naming_the_file(dump: tuple[Path, str]) -> None:
    path, checksum = dump
    os.truncate(path, 2 * BLOCK_SIZE + 100)
    res = ev.verify_dump(path, SIZE, checksum)
    assert not res["ok"]
    assert res["problems"] == [f"disk0.img is short: {2 * BLOCK_SIZE + 100} of {SIZE}"
                               " bytes"]
    # block 2 lost most of its data; blocks 0 and 1 are intact
    assert res["bad_blocks"] == [{"block": 2, "offset": 2 * BLOCK_SIZE, "length": 2 * MIB}]
    # cut at a block boundary: the lost block is beyond the end, the "short" problem says it
    os.truncate(path, 2 * BLOCK_SIZE)
    res = ev.verify_dump(path, SIZE, checksum)
    assert (len(res["problems"]), res["bad_block_count"]) == (1, 0) and not res["ok"]


def test_longer_dump_is_a_problem_and_only_the_disk_is_hashed(
        dump: tuple[Path, str]) -> None:
    path, checksum = dump
    with open(path, "ab") as handle:
        handle.write(b"extra")
    res = ev.verify_dump(path, SIZE, checksum)
    assert res["problems"] == [f"disk0.img is longer than the disk: {SIZE + 5} bytes,"
                               f" expected {SIZE}"]
    assert res["bad_block_count"] == 0


def test_missing_dump_and_not_a_file(dump: tuple[Path, str], tmp_path: Path) -> None:
    path, checksum = dump
    os.unlink(path)
    assert ev.verify_dump(path, SIZE, checksum)["problems"] == ["disk0.img is missing"]
    path.symlink_to("/dev/zero")
    res = ev.verify_dump(path, SIZE, checksum)
    assert (res["ok"], res["problems"]) == (False, ["disk0.img is not a regular file"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "directory"])
def test_damaged_index_is_a_problem_and_the_checksum_still_decides(
        dump: tuple[Path, str], damage: str) -> None:
    path, checksum = dump
    index = blockindex.index_path(path)
    if damage == "flip":
        _flip(index, 40)
    elif damage == "truncate":
        os.truncate(index, 50)
    elif damage == "garbage":
        index.write_bytes(b"not an index")
    else:
        index.unlink()
        index.mkdir()
    res = ev.verify_dump(path, SIZE, checksum)
    assert res["method"] == "checksum" and not res["ok"]
    assert len(res["problems"]) == 1
    assert res["problems"][0].startswith("disk0.img.index")
    assert "bad blocks cannot be located" in res["problems"][0]
    # and a damaged dump is still found, by its checksum
    _flip(path, 3)
    res = ev.verify_dump(path, SIZE, checksum)
    assert len(res["problems"]) == 2 and "its checksum" in res["problems"][1]


def test_index_for_another_content_or_size_is_a_problem(dump: tuple[Path, str]) -> None:
    path, checksum = dump
    other = blockindex.from_digests(SIZE, [bytes(32)] * 3)
    other.write(blockindex.index_path(path))
    res = ev.verify_dump(path, SIZE, checksum)
    assert res["method"] == "checksum" and not res["ok"]
    assert res["problems"] == [f"disk0.img.index: its checksum {other.checksum} is not"
                               f" config.ini's disk0_checksum {checksum} (bad blocks cannot"
                               " be located)"]
    blockindex.from_digests(4 * MIB, [bytes(32)]).write(blockindex.index_path(path))
    assert "is for a 4194304-byte disk" in ev.verify_dump(path, SIZE, checksum)["problems"][0]


def test_missing_index_means_checksum_only(dump: tuple[Path, str]) -> None:
    path, checksum = dump
    blockindex.index_path(path).unlink()
    res = ev.verify_dump(path, SIZE, checksum)
    assert (res["ok"], res["method"], res["problems"]) == (True, "checksum", [])
    assert res["notes"] == ["no block index (disk0.img.index): checked against the"
                            " checksum only, bad blocks cannot be located"]
    _flip(path, 2 * BLOCK_SIZE + 1)
    res = ev.verify_dump(path, SIZE, checksum)
    assert not res["ok"] and res["bad_blocks"] == []
    assert res["problems"] == [f"disk0.img: its checksum {checksum_file(path)} is not the"
                               f" recorded {checksum} (bad blocks cannot be located"
                               " without a block index)"]


def test_older_sha256_checksum_is_verified(dump: tuple[Path, str]) -> None:
    path, _checksum = dump
    blockindex.index_path(path).unlink()
    recorded = checksum_file(path, "sha256-4m")
    assert ev.verify_dump(path, SIZE, recorded)["ok"]
    _flip(path, 9)
    assert not ev.verify_dump(path, SIZE, recorded)["ok"]


def test_no_checksum_no_index_is_unverifiable_not_bad(dump: tuple[Path, str]) -> None:
    path, _checksum = dump
    blockindex.index_path(path).unlink()
    res = ev.verify_dump(path, SIZE, None)
    assert (res["ok"], res["method"], res["read_bytes"]) == (True, "none", 0)
    assert res["notes"] == ["config.ini has no disk0_checksum and there is no block index:"
                            " unverifiable"]
    # a missing dump is a problem even then
    path.unlink()
    assert ev.verify_dump(path, SIZE, None)["problems"] == ["disk0.img is missing"]


def test_no_checksum_but_an_index_checks_block_by_block(dump: tuple[Path, str]) -> None:
    path, _checksum = dump
    _flip(path, BLOCK_SIZE * 2 + 3)
    res = ev.verify_dump(path, SIZE, None)
    assert res["method"] == "index" and [b["block"] for b in res["bad_blocks"]] == [2]
    assert "checked against the block index" in res["notes"][0]


def test_malformed_recorded_checksum_names_the_key(dump: tuple[Path, str]) -> None:
    path, _checksum = dump
    res = ev.verify_dump(path, SIZE, "md5:0123", 1, "disk/1")
    assert not res["ok"] and res["problems"][0].startswith("config.ini disk1_checksum:")
    assert res["method"] == "index"     # the index still checks every block


# --- the procedures, on a real export dir ----------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path / "root"))


STAMP1, STAMP2 = 1767322800, 1767409200     # 2026-01-02/03 03:00 UTC
GEN1, GEN2 = "20260102T030000Z", "20260103T030000Z"


def _export(ctx: NodeContext, stamp: int, with_index: bool = True) -> None:
    staging = ctx.paths.root / ex.export_prepare(ctx, "inst1").lstrip("/")
    _write_dump(staging / "disk0.img")
    if with_index:
        _index_of(staging / "disk0.img").write(blockindex.index_path(staging / "disk0.img"))
    info = exportconf.ExportInfo(name="inst1", source="node1", timestamp=stamp, disks=[
        exportconf.ExportDisk(dump="disk0.img", size=SIZE // MIB, ivname="disk/0",
                              checksum=checksum_file(staging / "disk0.img"))])
    ex.export_finalize(ctx, "inst1", exportconf.render(info), True)


def test_verify_disk_finds_the_generation_wherever_it_is(ctx: NodeContext) -> None:
    _export(ctx, STAMP1)
    _export(ctx, STAMP2)
    older = eg.generations_root(ctx, "inst1") / GEN1 / "disk0.img"
    _flip(older, BLOCK_SIZE + 1)
    res = ev.export_verify_disk(ctx, "inst1", GEN1, 0)
    assert res["ivname"] == "disk/0" and res["bad_blocks"][0]["offset"] == BLOCK_SIZE
    assert ev.export_verify_disk(ctx, "inst1", GEN2, 0)["ok"]
    for bad_index in (1, -1):
        with pytest.raises(RpcFail, match=f"has no disk {bad_index}"):
            ev.export_verify_disk(ctx, "inst1", GEN2, bad_index)
    with pytest.raises(RpcFail, match="Invalid instance name"):
        ev.export_verify_disk(ctx, "../inst1", GEN2, 0)
    with pytest.raises(RpcFail, match="Invalid export generation"):
        ev.export_verify_record(ctx, "inst1", "../../x", True, [])
    with pytest.raises(RpcFail, match="No export generation"):
        ev.export_verify_disk(ctx, "inst1", "20250101T000000Z", 0)
    (ex.export_path(ctx, "inst1") / "config.ini").write_text(
        f"[export]\nversion = 0\ntimestamp = {STAMP2}\n")
    with pytest.raises(RpcFail, match=r"config.ini: .*section \[instance\] is missing"):
        ev.export_verify_disk(ctx, "inst1", GEN2, 0)


def _gen(ctx: NodeContext, name: str) -> dict[str, object]:
    return next(dict(g) for g in eg.export_generations(ctx) if g["generation"] == name)


def test_record_round_trip_keeps_protection_and_note_and_vice_versa(
        ctx: NodeContext) -> None:
    _export(ctx, STAMP1)
    assert _gen(ctx, GEN1)["verify"] is None
    eg.export_generation_modify(ctx, "inst1", None, True, "before the upgrade")
    record = ev.export_verify_record(ctx, "inst1", GEN1, False,
                                     ["disk/0: bad block at offset 0 (block 0, 4.0M)"])
    assert record["ok"] is False and isinstance(record["time"], int)
    gen = _gen(ctx, GEN1)
    assert (gen["protected"], gen["note"], gen["verify"], gen["meta_problem"]) == (
        True, "before the upgrade", record, None)
    # changing the note keeps the verify record
    eg.export_generation_modify(ctx, "inst1", None, None, "still here")
    assert _gen(ctx, GEN1)["verify"] == record
    # unprotecting and clearing the note keeps the sidecar: the record is still in it
    eg.export_generation_modify(ctx, "inst1", None, False, "")
    sidecar = ex.export_path(ctx, "inst1") / exportmeta.META_FILE
    assert json.loads(sidecar.read_text())["verify"] == record
    # the record moves with the generation when a newer export retires it
    _export(ctx, STAMP2)
    assert _gen(ctx, GEN1)["verify"] == record and _gen(ctx, GEN2)["verify"] is None
    again = ev.export_verify_record(ctx, "inst1", GEN1, True, [])
    assert _gen(ctx, GEN1)["verify"] == again and again["ok"] is True


def test_record_keeps_at_most_the_cap_of_short_problems() -> None:
    many = [f"disk/0: bad block at offset {n}" for n in range(40)]
    record = exportmeta.verify_record(False, [*many[:-1], "x" * 500 + "\n"])
    assert len(record["problems"]) == exportmeta.PROBLEMS_MAX
    assert record["problems"][-1] == "... and 9 more problem(s)"
    long = exportmeta.verify_record(False, ["x\ny" + "z" * 500])["problems"][0]
    assert len(long) == exportmeta.PROBLEM_MAX and long.startswith("x?y")
    # what verify_record makes always renders and parses back unchanged
    meta = exportmeta.ExportMeta(verify=record)
    assert exportmeta.parse(exportmeta.render(meta).encode()).verify == record


@pytest.mark.parametrize(("verify", "problem"), [
    ("yes", "verify: must be an object"),
    ({"ok": True, "problems": []}, "verify: time must be seconds"),
    ({"time": True, "ok": True}, "verify: time must be seconds"),
    ({"time": -1, "ok": True}, "verify: time must be seconds"),
    ({"time": 5, "ok": "yes"}, "verify: ok must be true or false"),
    ({"time": 5, "ok": False, "problems": "bad"}, "verify: problems must be a list"),
    ({"time": 5, "ok": False, "problems": [1]}, "verify: problems must be a list"),
    ({"time": 5, "ok": False, "problems": ["p"] * 33}, "verify: problems must be a list"),
    ({"time": 5, "ok": True, "problems": ["p"]}, "verify: ok with problems"),
])
def test_bad_stored_record_is_dropped_with_a_warning_and_nothing_else_is_lost(
        verify: object, problem: str) -> None:
    raw = json.dumps({"protected": True, "note": "n", "verify": verify}).encode()
    meta = exportmeta.parse(raw)
    assert (meta.protected, meta.note, meta.verify) == (True, "n", None)
    assert problem in str(meta.problem)


def test_stored_problems_are_made_one_line_on_reading() -> None:
    raw = json.dumps({"verify": {"time": 5, "ok": False,
                                 "problems": ["a\x1b[2Jb", "c" * 300]}}).encode()
    meta = exportmeta.parse(raw)
    assert meta.problem is None and meta.verify is not None
    assert meta.verify["problems"][0] == "a?[2Jb"
    assert len(meta.verify["problems"][1]) == exportmeta.PROBLEM_MAX


def test_verify_record_and_protect_at_once_lose_neither(
        ctx: NodeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify takes no instance lock: its record and a protect of the same generation,
    served by two node daemon threads at once, must both survive."""
    _export(ctx, STAMP1)
    real_read = export_meta.read
    recording, protected = threading.Event(), threading.Event()

    def slow_read(path: Path) -> exportmeta.ExportMeta:
        meta = real_read(path)
        if threading.current_thread().name == "verify":
            recording.set()
            protected.wait(1.0)      # without serialisation the protect lands here
        return meta

    monkeypatch.setattr(export_meta, "read", slow_read)
    verify = threading.Thread(name="verify", target=ev.export_verify_record,
                              args=(ctx, "inst1", GEN1, True, []))
    verify.start()
    assert recording.wait(5.0)

    def protect_it() -> None:
        eg.export_generation_modify(ctx, "inst1", GEN1, True, "keep")
        protected.set()

    protect = threading.Thread(target=protect_it)
    protect.start()
    verify.join(10.0)
    protect.join(10.0)
    gen = _gen(ctx, GEN1)
    assert (gen["protected"], gen["note"]) == (True, "keep")
    record = gen["verify"]
    assert isinstance(record, dict) and (record["ok"], record["problems"]) == (True, [])


def test_the_largest_sidecar_is_still_read_back() -> None:
    """Every character JSON escapes worst (astral: two \\u escapes), at every limit."""
    record = exportmeta.verify_record(False, ["\U0001F4BE" * 500] * 40)
    meta = exportmeta.ExportMeta(protected=True, note="\U0001F4BE" * exportmeta.NOTE_MAX,
                                 verify=record)
    raw = exportmeta.render(meta).encode()
    assert len(raw) <= exportmeta.MAX_META_BYTES
    back = exportmeta.parse(raw)
    assert (back.verify, back.note, back.problem) == (record, meta.note, None)
