"""Allocated, unique and shared bytes of export generations (ganeti.storage.usage),
on real filesystems: btrfs (reflinks, zstd compression), ext4 and tmpfs."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg
from ganeti.storage import fiemap, reflink, usage

MIB = 1 << 20
# repeated text: zstd shrinks it at least 30-fold
TEXT = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % (i % 1000)
                for i in range(1000))


def _write(path: Path, data: bytes, offset: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _text(size: int) -> bytes:
    return (TEXT * (size // len(TEXT) + 1))[:size]


def _clone(src: Path, dst: Path) -> None:
    reflink.clone_file(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def _generations(tmp: Path, count: int) -> list[Path]:
    dirs = [tmp / f"gen{n}" for n in range(count)]
    for path in dirs:
        path.mkdir()
    return dirs


def _no_tree_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as without root: btrfs refuses the tree search, FIEMAP must do."""
    real = fcntl.ioctl

    def ioctl(fd: int, request: int, *args: Any) -> Any:
        if request == usage.BTRFS_IOC_TREE_SEARCH_V2:
            raise OSError(errno.EPERM, "Operation not permitted")
        return real(fd, request, *args)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)


@pytest.mark.parametrize("mapper", ["tree-search", "fiemap"])
def test_reflinked_generations_split_into_unique_and_shared(
        reflink_dir: Path, mapper: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if mapper == "fiemap":
        _no_tree_search(monkeypatch)
    mapped: list[Path] = []
    real_extents = fiemap.extents

    def extents(path: Path, **kwargs: Any) -> list[fiemap.Extent]:
        mapped.append(path)
        return real_extents(path, **kwargs)

    monkeypatch.setattr(fiemap, "extents", extents)
    one, two, three = _generations(reflink_dir, 3)
    _write(one / "disk0.img", os.urandom(16 * MIB))
    _clone(one / "disk0.img", two / "disk0.img")           # an incremental export:
    _write(two / "disk0.img", os.urandom(4 * MIB), 8 * MIB)  # 4 MiB changed
    _write(three / "disk0.img", os.urandom(2 * MIB))        # unrelated, full
    a, b, c = usage.generation_usage([usage.directory_files(p) for p in (one, two, three)])
    assert (a.size, b.size, c.size) == (16 * MIB, 16 * MIB, 2 * MIB)
    assert a == usage.Usage(size=16 * MIB, used=16 * MIB, unique=4 * MIB, shared=12 * MIB)
    assert b == usage.Usage(size=16 * MIB, used=16 * MIB, unique=4 * MIB, shared=12 * MIB)
    assert c == usage.Usage(size=2 * MIB, used=2 * MIB, unique=2 * MIB, shared=0)
    # btrfs as root answers from its extent items; FIEMAP only when refused
    assert len(mapped) == (3 if mapper == "fiemap" else 0)
    # without the third, the first alone keeps its data: nothing is shared any more
    alone, = usage.generation_usage([usage.directory_files(one)])
    assert alone.unique == alone.used == 16 * MIB and alone.shared == 0


def test_a_range_used_twice_in_one_generation_counts_once(reflink_dir: Path) -> None:
    gen, = _generations(reflink_dir, 1)
    _write(gen / "disk0.img", os.urandom(8 * MIB))
    _clone(gen / "disk0.img", gen / "disk1.img")
    use, = usage.generation_usage([usage.directory_files(gen)])
    assert use.size == 16 * MIB
    assert use.used == use.unique == 8 * MIB and use.shared == 0


def test_compressed_btrfs_reports_the_compressed_size(compressed_dir: Path) -> None:
    one, two = _generations(compressed_dir, 2)
    _write(one / "disk0.img", _text(32 * MIB))
    _clone(one / "disk0.img", two / "disk0.img")
    _write(two / "disk0.img", _text(MIB)[::-1], 4 * MIB)
    # st_blocks (what list -g showed before) counts the uncompressed bytes
    assert os.stat(one / "disk0.img").st_blocks * 512 >= 32 * MIB
    a, b = usage.generation_usage([usage.directory_files(p) for p in (one, two)])
    assert a.size == b.size == 32 * MIB
    assert 0 < a.used < 2 * MIB, a
    assert a.used == a.unique + a.shared and b.used == b.unique + b.shared
    assert a.shared == b.shared > 0
    assert 0 < b.unique < MIB // 4, b     # the rewritten MiB, compressed


def test_compressed_without_tree_search_counts_at_most_the_uncompressed_size(
        compressed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_tree_search(monkeypatch)
    gen, = _generations(compressed_dir, 1)
    _write(gen / "disk0.img", _text(8 * MIB))
    assert any(e.flags & fiemap.ENCODED for e in fiemap.extents(gen / "disk0.img"))
    use, = usage.generation_usage([usage.directory_files(gen)])
    assert 0 < use.used <= 8 * MIB and use.unique == use.used


def test_sparse_dump_on_a_filesystem_without_reflink(tmp_path: Path) -> None:
    gen, = _generations(tmp_path, 1)
    _write(gen / "disk0.img", os.urandom(MIB), 7 * MIB)     # 8 MiB, 7 of them a hole
    (gen / "config.ini").write_text("[export]\nversion = 0\n")
    use, = usage.generation_usage([usage.directory_files(gen)])
    assert use.size == 8 * MIB + len("[export]\nversion = 0\n")
    assert MIB <= use.used <= MIB + 64 * 1024
    assert use.unique == use.used and use.shared == 0


def test_tmpfs_falls_back_to_allocated_blocks() -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    base = Path(os.environ.get("TMPDIR_SHM", "/dev/shm")) / f"usage-{os.getpid()}"
    base.mkdir()
    try:
        _write(base / "disk0.img", os.urandom(MIB), MIB)
        try:
            fiemap.extents(base / "disk0.img")
        except fiemap.FiemapUnsupportedError:
            pass
        else:
            pytest.skip("this tmpfs maps extents")
        use, = usage.generation_usage([usage.directory_files(base)])
        assert use == usage.Usage(size=2 * MIB, used=MIB, unique=MIB, shared=0)
    finally:
        for entry in base.iterdir():
            entry.unlink()
        base.rmdir()


def test_files_that_vanish_or_are_not_regular_count_nothing(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    (tmp_path / "sub").mkdir()
    assert usage.directory_files(tmp_path) == []
    assert usage.directory_files(tmp_path / "missing") == []
    use, = usage.generation_usage([[tmp_path / "gone.img", tmp_path / "link"]])
    assert use == usage.Usage(size=0, used=0, unique=0, shared=0)


def test_split_counts_each_range_by_how_many_generations_use_it() -> None:
    # generation 0: [0, 100) and [200, 300); 1: [50, 250); 2: [240, 400) on another device
    gens = [[(1, 0, 100), (1, 200, 300)], [(1, 50, 250)], [(2, 240, 400)]]
    unique, shared = usage._split([usage._merge(g) for g in gens])
    assert unique == [50 + 50, 100, 160]
    assert shared == [50 + 50, 50 + 50, 0]
    assert usage._merge([(1, 10, 20), (1, 0, 15), (2, 0, 5), (1, 20, 30)]) == [
        (1, 0, 30), (2, 0, 5)]


def test_export_generations_reports_usage_per_generation(compressed_dir: Path) -> None:
    """The node procedure behind gnt-backup list -g, on a compressing btrfs."""
    ctx = NodeContext(paths=pathutils.Paths.for_root(compressed_dir / "root"))
    for day, change in ((1767322800, None), (1767409200, 3 * MIB)):
        staging = ctx.paths.root / ex.export_prepare(ctx, "inst1").lstrip("/")
        gens = eg.export_generations(ctx, ["inst1"], usage=True)
        if gens:                                      # incremental: clone the newest
            _clone(ctx.paths.root / gens[0]["path"].lstrip("/") / "disk0.img",
                   staging / "disk0.img")
            _write(staging / "disk0.img", _text(MIB)[::-1], change or 0)
        else:
            _write(staging / "disk0.img", _text(16 * MIB))
        ex.export_finalize(ctx, "inst1", f"[export]\nversion = 0\ntimestamp = {day}\n", True)
    newest, older = eg.export_generations(ctx, ["inst1"], usage=True)
    assert newest["newest"] and not older["newest"]
    for gen in (newest, older):
        assert gen["size"] > 16 * MIB
        assert gen["used"] < gen["size"] // 8, gen     # stored compressed
        assert gen["used"] == gen["unique"] + gen["shared"]
        assert gen["shared"] > 0
    assert newest["shared"] == older["shared"]


def test_unwritten_and_inline_data_count_as_the_generations_own(reflink_dir: Path) -> None:
    gen, = _generations(reflink_dir, 1)
    (gen / "disk0.img").write_bytes(os.urandom(MIB))     # no fsync: maybe still delalloc
    use, = usage.generation_usage([usage.directory_files(gen)])
    assert use == usage.Usage(size=MIB, used=MIB, unique=MIB, shared=0)
    (gen / "disk0.img").unlink()
    _write(gen / "config.ini", b"[export]\nversion = 0\n" * 20)
    os.sync()                                             # small files go inline
    use, = usage.generation_usage([usage.directory_files(gen)])
    assert use.size == 420 and 0 < use.used <= 4096 and use.unique == use.used
