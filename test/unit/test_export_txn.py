"""Finalize as a transaction: a fault or a crash at every filesystem step.

The hook ``ganeti.backend.export_layout.FAULT_HOOK`` makes the N-th filesystem
operation fail (ENOSPC, EDQUOT, EIO: once, or from then on) or "crash" (a
BaseException nothing catches, like the node dying there).  After each
case every export and generation is checked against the checksum its
config.ini records, and the outcome must be exactly one of: the new export
in place with every previous one kept (finalize succeeded) or the previous
state untouched (finalize failed).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import pathutils
from ganeti.backend import NodeContext, RpcFail, export_layout
from ganeti.backend import export as ex
from ganeti.backend import export_generations as eg
from ganeti.rpc.payloads import FinalizeResult

DAY1, DAY2, DAY3 = 1767322800, 1767409200, 1767495600   # 2026-01-02/03/04 03:00 UTC
ERRNOS = [errno.ENOSPC, errno.EDQUOT, errno.EIO]
INST = "inst1"
FIGURES: Counter[str] = Counter()


class Crash(BaseException):
    """The node died at this step (nothing may catch it)."""


class Faults:
    """Fail the ``at``-th filesystem operation (and, ``persist``, every later one)."""

    def __init__(self, at: int | None = None, make: Callable[[], BaseException] | None = None,
                 persist: bool = False) -> None:
        self.at, self.make, self.persist = at, make, persist
        self.count = 0
        self.ops: list[str] = []

    def __call__(self, op: str, paths: tuple[Path, ...]) -> None:
        self.count += 1
        self.ops.append(op)
        if self.at is not None and self.make is not None and (
                self.count == self.at or (self.persist and self.count > self.at)):
            raise self.make()


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A scratch dir on tmpfs where there is one (fsync is free there: the matrix is big)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="ganeti-txn-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Faults | None], None]]:
    def install(faults: Faults | None) -> None:
        monkeypatch.setattr(export_layout, "FAULT_HOOK", faults)
    yield install


def _ctx(root: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(root))


def _config(payload: bytes, stamp: int) -> str:
    return (f"[export]\nversion = 0\ntimestamp = {stamp}\n"
            f"[disk]\nsha256 = {hashlib.sha256(payload * 1000).hexdigest()}\n")


def _stage(ctx: NodeContext, payload: bytes, name: str = INST) -> None:
    staging = ctx.paths.root / ex.export_prepare(ctx, name).lstrip("/")
    (staging / "disk0.img").write_bytes(payload * 1000)


def _export(ctx: NodeContext, payload: bytes, stamp: int, keep: bool) -> FinalizeResult:
    _stage(ctx, payload)
    return ex.export_finalize(ctx, INST, _config(payload, stamp), keep)


def _label(path: Path) -> str:
    """The payload of one export, after checking its bytes against its checksum."""
    data = (path / "disk0.img").read_bytes()
    conf = (path / "config.ini").read_text()
    assert f"sha256 = {hashlib.sha256(data).hexdigest()}" in conf, f"{path}: corrupt"
    assert data == data[:1] * 1000, f"{path}: not one whole payload"
    return data[:1].decode()


def state(ctx: NodeContext) -> tuple[str | None, list[str]]:
    """(payload of the newest export, sorted payloads of the older generations)."""
    final = ex.export_path(ctx, INST)
    newest = _label(final) if final.is_dir() else None
    olds = []
    root = eg.generations_root(ctx, INST)
    if root.is_dir():
        for gen_dir in root.iterdir():
            if (gen_dir / "config.ini").is_file():
                olds.append(_label(gen_dir))
    gens = eg.export_generations(ctx, [INST])
    names = [g["generation"] for g in gens]
    assert len(names) == len(set(names)), f"generation names not unique: {names}"
    for entry in gens:     # every name leads to a whole export, the newest to F
        info = eg.export_generation_info(ctx, INST, entry["generation"])
        label = _label(ctx.paths.root / info["path"].lstrip("/"))
        assert label == newest if entry["newest"] else label in olds
    return newest, sorted(olds)


def _setup(ctx: NodeContext, keep: bool) -> tuple[str | None, list[str]]:
    if keep:
        _export(ctx, b"A", DAY1, True)
    _export(ctx, b"B", DAY2, keep)
    return state(ctx)


def _expected(before: tuple[str | None, list[str]], keep: bool
              ) -> tuple[tuple[str | None, list[str]], tuple[str | None, list[str]]]:
    """(state after success, state after failure)."""
    newest, olds = before
    kept = sorted([*olds, newest]) if keep and newest else olds
    return ("C", kept), before


def _check_clean(ctx: NodeContext) -> None:
    ex.export_cleanup(ctx)
    assert ex.export_leftovers(ctx) == []


def _scenarios() -> list[tuple[bool, bool, int]]:
    """(keep, exchange supported, timestamp of the new export)."""
    return [(keep, exchange, stamp) for keep in (True, False) for exchange in (True, False)
            for stamp in (DAY3, DAY2)]


def _no_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(a: Path, b: Path) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(export_layout, "_exchange", refuse)


def _count_ops(root: Path, keep: bool, stamp: int, hook: Any) -> int:
    ctx = _ctx(root)
    _setup(ctx, keep)
    _stage(ctx, b"C")
    counter = Faults()
    hook(counter)
    ex.export_finalize(ctx, INST, _config(b"C", stamp), keep)
    hook(None)
    return counter.count


@pytest.mark.parametrize("persist", [False, True], ids=["once", "persistent"])
@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
@pytest.mark.parametrize("keep,exchange,stamp", _scenarios())
def test_a_fault_at_every_step_keeps_the_invariant(
        fast_tmp: Path, hook: Any, monkeypatch: pytest.MonkeyPatch, keep: bool,
        exchange: bool, stamp: int, err: int, persist: bool) -> None:
    if not exchange:
        _no_exchange(monkeypatch)
    total = _count_ops(fast_tmp / "count", keep, stamp, hook)
    assert total >= 8
    for at in range(1, total + 2):
        ctx = _ctx(fast_tmp / f"n{at}")
        before = _setup(ctx, keep)
        success_state, failure_state = _expected(before, keep)
        _stage(ctx, b"C")
        hook(Faults(at, lambda: OSError(err, f"injected {errno.errorcode[err]}"), persist))
        try:
            result = ex.export_finalize(ctx, INST, _config(b"C", stamp), keep)
        except RpcFail:
            ok = False
            # what the master does next; with a persistent fault it may fail too
            try:
                ex.export_abort(ctx, INST)
            except RpcFail:
                hook(None)
                ex.export_abort(ctx, INST)
        else:
            ok = True
            # a fault after the commit point: success, but the caller is told
            assert at > total or result["warnings"], (at, result)
        hook(None)
        after = state(ctx)
        assert after == (success_state if ok else failure_state), (at, ok, after)
        _check_clean(ctx)
        assert state(ctx) == after
        FIGURES["fault cases"] += 1
        FIGURES["succeeded" if ok else "failed cleanly"] += 1


@pytest.mark.parametrize("recovery", ["cleanup", "abort", "prepare"])
@pytest.mark.parametrize("keep,exchange,stamp", _scenarios())
def test_a_crash_between_any_two_steps_is_recovered(
        fast_tmp: Path, hook: Any, monkeypatch: pytest.MonkeyPatch, keep: bool,
        exchange: bool, stamp: int, recovery: str) -> None:
    if not exchange:
        _no_exchange(monkeypatch)
    total = _count_ops(fast_tmp / "count", keep, stamp, hook)
    for at in range(1, total + 1):
        ctx = _ctx(fast_tmp / f"n{at}")
        before = _setup(ctx, keep)
        success_state, failure_state = _expected(before, keep)
        _stage(ctx, b"C")
        hook(Faults(at, Crash))
        with pytest.raises(Crash):
            ex.export_finalize(ctx, INST, _config(b"C", stamp), keep)
        hook(None)
        # the node restarts; who finds the half-done finalize first varies
        if recovery == "cleanup":
            ex.export_cleanup(ctx)
        elif recovery == "abort":
            ex.export_abort(ctx, INST)
        else:
            ex.export_prepare(ctx, INST)
            ex.export_abort(ctx, INST)
        after = state(ctx)
        assert after in (success_state, failure_state), (at, after)
        _check_clean(ctx)
        assert state(ctx) == after
        FIGURES["crash cases"] += 1
        FIGURES["crash: completed" if after == success_state else "crash: undone"] += 1


@pytest.mark.parametrize("exchange", [True, False])
@pytest.mark.parametrize("keep", [True, False])
def test_a_crash_during_recovery_is_recovered_too(fast_tmp: Path, hook: Any,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  keep: bool, exchange: bool) -> None:
    if not exchange:
        _no_exchange(monkeypatch)
    total = _count_ops(fast_tmp / "count", keep, DAY3, hook)
    for first in range(1, total + 1):
        for second in range(1, 12):
            ctx = _ctx(fast_tmp / f"n{first}-{second}")
            before = _setup(ctx, keep)
            valid = _expected(before, keep)
            _stage(ctx, b"C")
            hook(Faults(first, Crash))
            with pytest.raises(Crash):
                ex.export_finalize(ctx, INST, _config(b"C", DAY3), keep)
            hook(Faults(second, Crash))
            try:
                ex.export_cleanup(ctx)
            except Crash:
                pass
            hook(None)
            ex.export_cleanup(ctx)
            assert state(ctx) in valid, (first, second)
            assert ex.export_leftovers(ctx) == []
            FIGURES["crash-in-recovery cases"] += 1


def test_undo_failing_too_deletes_nothing(tmp_path: Path, hook: Any) -> None:
    """The issue's case: after the swap nothing works any more (a dying disk)."""
    ctx = _ctx(tmp_path)
    before = _setup(ctx, True)
    _stage(ctx, b"C")
    ops = Faults()
    hook(ops)
    ex.export_finalize(ctx, INST, _config(b"C", DAY3), True)
    commit = ops.ops.index("exchange") + 1
    ctx = _ctx(tmp_path / "again")
    before = _setup(ctx, True)
    _stage(ctx, b"C")
    hook(Faults(commit + 1, lambda: OSError(errno.EIO, "injected EIO"), persist=True))
    with pytest.raises(RpcFail, match=r"undoing it failed too.*nothing was deleted"):
        ex.export_finalize(ctx, INST, _config(b"C", DAY3), True)
    # the master aborts; the journal says the staging name holds the previous export
    with pytest.raises(RpcFail, match="nothing was removed"):
        ex.export_abort(ctx, INST)
    with pytest.raises(RpcFail):
        ex.export_prepare(ctx, INST)
    assert any(name.startswith(".journal/") for name in ex.export_leftovers(ctx))
    hook(None)
    ex.export_abort(ctx, INST)
    assert state(ctx) == before
    _check_clean(ctx)


def test_names_of_same_second_exports_are_unique_and_stable(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    names = []
    for payload in (b"A", b"B", b"C", b"D"):
        _export(ctx, payload, DAY1, True)
        newest = [g["generation"] for g in eg.export_generations(ctx, [INST]) if g["newest"]]
        names += newest
    assert names == ["20260102T030000Z", "20260102T030000Z-1", "20260102T030000Z-2",
                     "20260102T030000Z-3"]
    gens = {g["generation"]: g["newest"] for g in eg.export_generations(ctx, [INST])}
    assert gens == {names[0]: False, names[1]: False, names[2]: False, names[3]: True}
    # every name still means the export it meant when it was made
    for name, label in zip(names, "ABCD", strict=True):
        info = eg.export_generation_info(ctx, INST, name)
        assert _label(ctx.paths.root / info["path"].lstrip("/")) == label
    assert eg.export_generation_remove(ctx, INST, names[0])
    assert eg.export_generation_remove(ctx, INST, names[1])
    assert [g["generation"] for g in eg.export_generations(ctx, [INST])] == [names[3],
                                                                              names[2]]


def test_exports_already_on_disk_keep_their_names(tmp_path: Path) -> None:
    """Written before names were unique: an older generation and the newest share one."""
    ctx = _ctx(tmp_path)
    _export(ctx, b"A", DAY1, False)
    root = eg.generations_root(ctx, INST)
    root.mkdir(parents=True)
    ex.export_path(ctx, INST).rename(root / "20260102T030000Z")
    _export(ctx, b"B", DAY1, False)
    (ex.export_path(ctx, INST) / eg.GEN_NAME_FILE).unlink()
    assert [g["generation"] for g in eg.export_generations(ctx, [INST])] == [
        "20260102T030000Z", "20260102T030000Z"]
    info = eg.export_generation_info(ctx, INST, "20260102T030000Z")
    assert _label(ctx.paths.root / info["path"].lstrip("/")) == "A"
    _export(ctx, b"C", DAY3, True)
    assert state(ctx) == ("C", ["A", "B"])
    assert sorted(g["generation"] for g in eg.export_generations(ctx, [INST])) == [
        "20260102T030000Z", "20260102T030000Z-1", "20260104T030000Z"]


@pytest.mark.skipif(subprocess.run(["which", "chattr"], capture_output=True).returncode != 0,
                    reason="chattr not installed")
@pytest.mark.parametrize("exists", [True, False], ids=["gen-dir", "generations-root"])
def test_immutable_generations_dir_fails_cleanly(tmp_path: Path, exists: bool) -> None:
    """Issue 21 defect 2: retiring into .generations fails; nothing may be lost."""
    ctx = _ctx(tmp_path)
    if exists:
        _setup(ctx, True)
    else:
        _export(ctx, b"B", DAY2, True)
    before = state(ctx)
    target = eg.generations_root(ctx, INST) if exists else (
        ctx.paths.export_dir / eg.GENERATIONS_DIR)
    target.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["chattr", "+i", str(target)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"chattr +i not supported here: {made.stderr.strip()}")
    try:
        _stage(ctx, b"C")
        with pytest.raises(RpcFail, match="previous export is untouched"):
            ex.export_finalize(ctx, INST, _config(b"C", DAY3), True)
        ex.export_abort(ctx, INST)
        assert state(ctx) == before
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    _check_clean(ctx)
    assert state(ctx) == before


def test_remove_is_one_rename_then_the_deletion(tmp_path: Path, hook: Any) -> None:
    for at in (1, 2, 3):
        ctx = _ctx(tmp_path / str(at))
        _setup(ctx, True)
        hook(Faults(at, lambda: OSError(errno.EIO, "injected")))
        try:
            ex.export_remove(ctx, INST)
        except RpcFail:
            hook(None)
            assert state(ctx) == ("B", ["A"])     # nothing changed
        else:
            hook(None)
            assert state(ctx) == (None, ["A"])   # gone at once, even if trash is left
        assert eg.export_generation_remove(ctx, INST, "20260102T030000Z")
        _check_clean(ctx)


def test_concurrent_finalizes_of_different_instances(tmp_path: Path, hook: Any) -> None:
    """Shared parents (.generations, .journal) are made by whichever comes first."""
    ctx = _ctx(tmp_path)

    def slow_mkdir(op: str, _paths: tuple[Path, ...]) -> None:
        if op == "mkdir":           # every thread sees the parent missing first
            time.sleep(0.05)

    names = [f"c{i}" for i in range(8)]
    for name in names:
        _stage(ctx, b"A", name)
        ex.export_finalize(ctx, name, _config(b"A", DAY1), True)
        _stage(ctx, b"B", name)
    hook(slow_mkdir)
    barrier = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def finalize(name: str) -> None:
        barrier.wait()
        try:
            ex.export_finalize(ctx, name, _config(b"B", DAY2), True)
        except BaseException as err:   # reported below
            errors.append(err)

    threads = [threading.Thread(target=finalize, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for name in names:
        assert [g["newest"] for g in eg.export_generations(ctx, [name])] == [True, False]
    assert ex.export_leftovers(ctx) == []


@pytest.mark.parametrize("record", [
    "not json", '{"id": "../../x", "instance": "inst1", "keep": false}',
    '{"id": "ab", "instance": "../etc", "keep": false}',
    '{"id": "ab", "instance": "inst1", "keep": true, "generation": "../../x"}'])
def test_a_hostile_or_broken_journal_is_never_acted_on(tmp_path: Path, record: str) -> None:
    ctx = _ctx(tmp_path)
    before = _setup(ctx, True)
    jdir = ctx.paths.export_dir / ex.JOURNAL_DIR
    (jdir / "ab.json").write_text(record)
    victim = tmp_path / "x"
    victim.mkdir()
    assert ".journal/ab.json" in ex.export_leftovers(ctx)
    assert ex.export_cleanup(ctx) == []          # kept for a human to look at
    _stage(ctx, b"C")                            # other work goes on
    ex.export_finalize(ctx, INST, _config(b"C", DAY3), True)
    assert state(ctx) == ("C", sorted([*before[1], "B"]))
    assert victim.is_dir() and (jdir / "ab.json").is_file()


def test_a_journal_locked_by_another_process_is_left_alone(tmp_path: Path,
                                                             hook: Any) -> None:
    """A shared export dir is cleaned by every node at once: one recovers, the rest wait."""
    ctx = _ctx(tmp_path)
    before = _setup(ctx, True)
    _stage(ctx, b"C")
    swapped: list[bool] = []

    def crash_after_exchange(op: str, _paths: tuple[Path, ...]) -> None:
        if op == "exchange":
            swapped.append(True)
        elif swapped:
            raise Crash

    hook(crash_after_exchange)
    with pytest.raises(Crash):
        ex.export_finalize(ctx, INST, _config(b"C", DAY3), True)
    hook(None)
    journal = next((ctx.paths.export_dir / ex.JOURNAL_DIR).glob("*.json"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(60)", str(journal)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert ex.export_cleanup(ctx) == []
        # the previous export still sits under the staging name: nothing removed it
        assert _label(ex.staging_path(ctx, INST)) == "B"
        with pytest.raises(RpcFail, match="recovered by another process"):
            ex.export_abort(ctx, INST)
    finally:
        holder.kill()
        holder.wait()
    ex.export_cleanup(ctx)
    assert state(ctx) == before and ex.export_leftovers(ctx) == []


def test_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints what this module tried (doc/reliability.md quotes it)."""
    with capsys.disabled():
        print("\nfinalize transaction figures:", dict(sorted(FIGURES.items())))
    assert "lost" not in FIGURES
