"""Finalize on real, nearly full filesystems: tmpfs with few inodes, a tiny ext4.

For every number of free inodes (and, separately, free blocks) from none up
to more than a finalize needs, the previous exports are set up, the
filesystem is filled to that point and a keep-generations finalize runs.
Its outcome must be one of the two the transaction allows, checked by the
bytes of every export and generation against their checksums.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg

INST = "fill1"
DAY1, DAY2, DAY3 = 1767322800, 1767409200, 1767495600


def _need_root() -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount")


def _mount(argv: list[str], mnt: Path) -> None:
    res = subprocess.run([*argv, str(mnt)], capture_output=True, text=True, timeout=120)
    if res.returncode:
        pytest.skip(f"cannot mount ({' '.join(argv)}): {res.stderr.strip()}")


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    _need_root()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if request.param == "tmpfs":
        _mount(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=200", "tmpfs"], mnt)
    else:
        if shutil.which("mkfs.ext4") is None:
            pytest.skip("mkfs.ext4 not installed")
        image = tmp_path / "image"
        with open(image, "wb") as handle:
            handle.truncate(4 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-N", "200", "-m", "0",
                        str(image)], check=True, capture_output=True, timeout=120)
        _mount(["mount", "-o", "loop", str(image)], mnt)     # loop freed on umount
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=120)


def _config(payload: bytes, stamp: int) -> str:
    return (f"[export]\nversion = 0\ntimestamp = {stamp}\n"
            f"[disk]\nsha256 = {hashlib.sha256(payload).hexdigest()}\n")


def _label(path: Path) -> str:
    data = (path / "disk0.img").read_bytes()
    assert f"sha256 = {hashlib.sha256(data).hexdigest()}" in (path / "config.ini").read_text()
    return data[:1].decode()


def state(ctx: NodeContext) -> tuple[str | None, list[str]]:
    final = ex.export_path(ctx, INST)
    root = eg.generations_root(ctx, INST)
    olds = sorted(_label(p) for p in root.iterdir()
                  if (p / "config.ini").is_file()) if root.is_dir() else []
    return (_label(final) if final.is_dir() else None), olds


def _export(ctx: NodeContext, payload: bytes, stamp: int) -> None:
    staging = ctx.paths.root / ex.export_prepare(ctx, INST).lstrip("/")
    (staging / "disk0.img").write_bytes(payload)
    ex.export_finalize(ctx, INST, _config(payload, stamp), True)


def _fill(filler: Path, inodes: bool, leave: int) -> None:
    """Use up the filesystem's inodes (or blocks), then free ``leave`` of them."""
    filler.mkdir()
    made: list[Path] = []
    try:
        if inodes:
            while True:
                path = filler / f"f{len(made)}"
                path.touch()
                made.append(path)
        else:
            fd = os.open(filler / "blob", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for chunk in (b"\0" * 65536, b"\0" * 1024):
                    try:
                        while True:
                            os.write(fd, chunk)
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as err:
        assert err.errno in (errno.ENOSPC, errno.EDQUOT), err
    if inodes:
        for path in made[-leave:] if leave else []:
            path.unlink()
    else:
        blob = filler / "blob"
        size = blob.stat().st_size
        os.truncate(blob, max(0, size - leave * 1024))


@pytest.mark.parametrize("history", [True, False], ids=["with-generations", "first"])
@pytest.mark.parametrize("inodes", [True, False], ids=["inodes", "blocks"])
def test_finalize_on_a_full_filesystem_keeps_the_invariant(small_fs: Path, inodes: bool,
                                                           history: bool) -> None:
    """"first": the first kept generation, so .generations/ must be created (the issue)."""
    outcomes = {"ok": 0, "failed": 0}
    for leave in range(0, 16):
        ctx = NodeContext(paths=pathutils.Paths.for_root(small_fs / f"n{leave}"))
        if history:
            _export(ctx, b"A" * 3000, DAY1)
        _export(ctx, b"B" * 3000, DAY2)
        before = state(ctx)
        staging = ctx.paths.root / ex.export_prepare(ctx, INST).lstrip("/")
        (staging / "disk0.img").write_bytes(b"C" * 3000)
        _fill(small_fs / f"filler{leave}", inodes, leave)
        try:
            result = ex.export_finalize(ctx, INST, _config(b"C" * 3000, DAY3), True)
        except (RpcFail, OSError):      # noded reports either as a failed call
            ok = False
            ex.export_abort(ctx, INST)
        else:
            ok = True
        after = state(ctx)
        kept = ("C", sorted([*before[1], "B"]))
        assert after == (kept if ok else before), (leave, ok, after)
        if ok and after != before:
            assert isinstance(result["warnings"], list)
        outcomes["ok" if ok else "failed"] += 1
        shutil.rmtree(small_fs / f"filler{leave}")
        ex.export_cleanup(ctx)
        assert ex.export_leftovers(ctx) == [] and state(ctx) == after
        shutil.rmtree(small_fs / f"n{leave}")
    # the range covers both sides: a disk too full to finalize, and one just enough
    assert outcomes["ok"] and outcomes["failed"], outcomes
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(small_fs)], capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{fstype} {'inodes' if inodes else 'blocks'} history={history}: {outcomes}")
