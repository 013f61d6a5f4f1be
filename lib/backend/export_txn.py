"""Export finalisation as a transaction, with crash recovery from an on-disk journal.

Invariant: after any failure, either the new export is complete in place
and every previous one is kept (as a generation where asked), reported as
success plus warnings, or the previous state is untouched and finalize
fails.  F is ``<instance>/``, S ``.staging/<instance>/``, G the generation
dir the replaced export goes to.  The steps, and the rule after a failure:

1. fsync the dumps in S, write ``config.ini`` (and ``.generation`` when the
   timestamp name is taken) durably.  Fail: nothing visible changed.
   Without a previous export: rename S to F; fail: nothing changed.
2. keep: create G's parent dirs; compute every name.  Fail: remove the dirs
   made, nothing else changed.
3. write the journal ``.journal/<id>.json`` (fsynced): instance, mode, the
   inodes of the new (S) and the previous (F) export, G's name.  Fail: as 2.
4. exchange S and F (RENAME_EXCHANGE; without it F -> ``.previous-<id>``,
   S -> F, ``.previous-<id>`` -> S), fsync both dirs.  Fail: undo (previous
   export back at F, new one at S, journal removed), fail.
5. commit: rename S (now the previous export) to G, or, plain, to
   ``.staging/.removed-<id>``.  Fail: undo as 4, fail.
6. fsync, delete the trash (plain), remove the journal.  Fail: success with
   a warning; what is left is a leftover for ``export_cleanup``.

If an undo fails too, the journal stays and finalize fails: abort, the next
export_prepare of the instance and the watcher's cleanup retry the undo
before removing anything, and never delete what a journal refers to.  After
a crash the same rule runs from what is on disk: the journal's inodes say
where both exports are; before the commit the finalize is undone, after it
completed.
"""

from __future__ import annotations

import configparser
import errno
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any, NoReturn

from ganeti import constants, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import export_layout as layout
from ganeti.rpc.payloads import FinalizeResult

JOURNAL_VERSION = 1
_ID_RE = re.compile(r"^[0-9a-f]{1,40}$")
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)
Ident = tuple[int, int]


def _ident(path: Path) -> Ident | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def journal_dir(ctx: NodeContext) -> Path:
    return ctx.paths.export_dir / layout.JOURNAL_DIR


class Txn:
    """One finalize, as recorded in its journal."""

    def __init__(self, ctx: NodeContext, record: dict[str, Any]) -> None:
        self.ctx = ctx
        self.record = record
        self.id = str(record["id"])
        if not _ID_RE.match(self.id):
            raise RpcFail(f"Invalid export journal id {self.id!r}")
        self.instance = layout.check_name(record["instance"])
        self.keep = bool(record["keep"])
        self.new = tuple(record["new"]) if record.get("new") else None
        self.old = tuple(record["old"]) if record.get("old") else None
        self.final = layout.export_path(ctx, self.instance)
        self.staging = layout.staging_path(ctx, self.instance)
        self.aside = ctx.paths.export_dir / f"{layout.ASIDE_PREFIX}{self.id}"
        self.trash = self.staging.parent / f"{layout.TRASH_PREFIX}{self.id}"
        generation = record.get("generation")
        self.target = (layout.generations_root(ctx, self.instance)
                       / layout.check_generation(generation) if self.keep else None)
        self.path = journal_dir(ctx) / f"{self.id}.json"

    @classmethod
    def load(cls, ctx: NodeContext, path: Path) -> Txn:
        try:
            record = json.loads(path.read_text())
            txn = cls(ctx, record)
        except (OSError, ValueError, KeyError, TypeError, RpcFail) as err:
            raise RpcFail(f"Unreadable export journal {path.name}: {err}") from None
        if txn.path != path:
            raise RpcFail(f"Export journal {path.name} names another transaction")
        return txn

    def where(self, ident: Any) -> str | None:
        """Which known place holds the directory with inode ``ident``."""
        if not ident:
            return None
        places = {"final": self.final, "staging": self.staging, "aside": self.aside}
        if self.target is not None:
            places["target"] = self.target
        else:
            places["trash"] = self.trash
        for name, path in places.items():
            if _ident(path) == tuple(ident):
                return name
        return None

    def referenced(self) -> list[str]:
        """Leftover names (relative to the export dir) cleanup must not delete."""
        base = self.ctx.paths.export_dir
        return [str(p.relative_to(base)) for p in (self.path, self.staging, self.aside)]

    # --- the two directions of recovery ---------------------------------------------

    def undo(self) -> None:
        """Put the previous export back at F (the new one at S); raises OSError."""
        old_at = self.where(self.old)
        if old_at == "staging":
            if self.where(self.new) == "final":
                _swap(self.staging, self.final, self.aside)
            elif not self.final.exists():
                layout.fs_rename(self.staging, self.final)
            else:
                raise RpcFail(f"Export journal {self.path.name}: {self.final.name} holds"
                              " an unknown directory; not touched")
        elif old_at == "aside":
            if self.where(self.new) == "final":
                layout.fs_rename(self.final, self.staging)
            layout.fs_rename(self.aside, self.final)
        elif old_at != "final":
            raise RpcFail(f"Export journal {self.path.name}: the previous export is no"
                          " longer where an undo could restore it")
        layout.fs_fsync(self.final.parent)
        layout.fs_fsync(self.staging.parent)
        self.forget()

    def complete(self) -> list[str]:
        """Finish a committed finalize; returns warnings."""
        warnings = []
        if not self.keep and self.trash.exists():
            try:
                layout.fs_rmtree(self.trash)
            except OSError as err:
                warnings.append(f"the replaced export is not fully deleted yet ({err});"
                                " the cleanup removes it")
        try:
            self.forget(strict=True)
        except OSError as err:
            warnings.append(f"cannot remove the export journal ({err}); the cleanup does")
        return warnings

    def committed(self) -> bool:
        return self.where(self.old) not in ("final", "staging", "aside")

    def recover(self) -> str:
        """Undo before the commit point, complete after it; returns what was done."""
        if self.committed():
            self.complete()
            return "completed"
        self.undo()
        return "undone"

    def recover_exclusive(self) -> str:
        """recover() while holding a lock on the journal (a shared export dir is
        cleaned by every node at once); "gone" when another one finished it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return "gone"
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise RecoveryBusy(f"export journal {self.path.name} is being"
                                       " recovered by another process") from None
                raise
            if os.fstat(fd).st_nlink == 0:
                return "gone"
            return self.recover()
        finally:
            os.close(fd)

    def forget(self, strict: bool = False) -> None:
        try:
            layout.fs_unlink(self.path)
            layout.fs_fsync(self.path.parent)
        except FileNotFoundError:
            pass
        except OSError:
            if strict:
                raise


class RecoveryBusy(RpcFail):
    """Another process holds the journal's lock."""


def _swap(a: Path, b: Path, slot: Path) -> None:
    """Exchange two directories; by three renames where the filesystem cannot."""
    try:
        layout.fs_exchange(a, b)
    except OSError as err:
        if err.errno not in _NO_EXCHANGE:
            raise
        layout.fs_rename(b, slot)
        layout.fs_rename(a, b)
        layout.fs_rename(slot, a)


def journals(ctx: NodeContext) -> list[Path]:
    jdir = journal_dir(ctx)
    if not jdir.is_dir():
        return []
    return sorted(p for p in jdir.iterdir() if p.name.endswith(".json"))


def recover_instance(ctx: NodeContext, instance_name: str) -> list[str]:
    """Finish or undo every half-done finalize of one instance (RpcFail if one cannot be)."""
    done = []
    for path in journals(ctx):
        try:
            txn = Txn.load(ctx, path)
        except RpcFail:
            continue            # not attributable; export_leftovers lists it
        if txn.instance != instance_name:
            continue
        try:
            done.append(txn.recover_exclusive())
        except OSError as err:
            raise RpcFail(f"Cannot recover the interrupted finalize of {instance_name}"
                          f" ({path.name}): {err}; nothing was removed") from None
    return done


def recover_all(ctx: NodeContext) -> tuple[list[str], set[str]]:
    """(journals handled, leftover names to keep because their journal is stuck)."""
    handled: list[str] = []
    keep: set[str] = set()
    base = ctx.paths.export_dir
    for path in journals(ctx):
        rel = str(path.relative_to(base))
        try:
            txn = Txn.load(ctx, path)
        except RpcFail:
            keep.add(rel)
            continue
        try:
            txn.recover_exclusive()
        except (OSError, RpcFail):
            keep.update(txn.referenced())
            continue
        handled.append(rel)
    return handled, keep


# --- finalize --------------------------------------------------------------------------


def _timestamp_name(config_text: str) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config_text)
        stamp = float(parser.get("export", "timestamp"))
    except (configparser.Error, ValueError):
        stamp = time.time()
    return layout.generation_name(stamp)


def _write_staging(ctx: NodeContext, instance_name: str, staging: Path,
                   config_text: str) -> str:
    """Step 1: the new export complete and durable in S; returns its generation name."""
    for dump in sorted(staging.iterdir()):
        if dump.is_file():
            layout.fs_fsync(dump)
    # 0600 as Ganeti's: [os_private] may hold secrets
    layout.fs_write(staging / constants.EXPORT_CONF_FILE, config_text, 0o600)
    base = _timestamp_name(config_text)
    name = layout.free_name(base, layout.taken_names(ctx, instance_name))
    if name != base:
        layout.fs_write(staging / layout.GEN_NAME_FILE, name + "\n", 0o640)
    layout.fs_fsync(staging)
    return name


def _remove_dirs(created: list[Path]) -> None:
    for directory in reversed(created):
        try:
            layout.fs_rmdir(directory)
        except OSError:
            continue


def finalize(ctx: NodeContext, instance_name: str, config_text: str,
             keep: bool) -> FinalizeResult:
    staging = layout.staging_path(ctx, instance_name)
    final = layout.export_path(ctx, instance_name)
    if not staging.is_dir():
        raise RpcFail(f"No export of {instance_name} is being written on this node")
    result: FinalizeResult = {"path": pathutils.to_wire_name(ctx.paths, final), "warnings": []}
    try:
        name = _write_staging(ctx, instance_name, staging, config_text)
    except OSError as err:
        raise RpcFail(f"Cannot write the export of {instance_name}: {err}") from None
    if not final.exists():
        try:
            layout.fs_rename(staging, final)
        except OSError as err:
            raise RpcFail(f"Cannot install the export of {instance_name}: {err}") from None
        for directory in (final.parent, staging.parent):
            try:
                layout.fs_fsync(directory)
            except OSError as err:
                result["warnings"].append(f"cannot fsync {directory.name}: {err}")
        return result

    created: list[Path] = []
    token = layout.new_token()
    try:
        record: dict[str, Any] = {"version": JOURNAL_VERSION, "id": token,
                                  "instance": instance_name, "keep": bool(keep),
                                  "new": _ident(staging), "old": _ident(final),
                                  "generation": None}
        if keep:
            target = layout.retire_target(ctx, instance_name, final, {name})
            record["generation"] = target.name
            # only this instance's dir is removed again (shared parents may be in use)
            created = [d for d in layout.fs_makedirs(target.parent) if d == target.parent]
        txn = Txn(ctx, record)
        layout.fs_makedirs(txn.path.parent)
        layout.fs_write(txn.path, json.dumps(record), 0o600)
    except OSError as err:
        _remove_dirs(created)
        raise RpcFail(f"Cannot finalize the export of {instance_name}: {err};"
                      " the previous export is untouched") from None

    try:
        _swap(staging, final, txn.aside)
        layout.fs_fsync(final.parent)
        layout.fs_fsync(staging.parent)
        # the commit point: the previous export leaves S for its place
        layout.fs_rename(staging, txn.target if txn.target is not None else txn.trash)
    except OSError as err:
        _fail(txn, err, created)
    result["generation"] = name
    for directory in dict.fromkeys(((txn.target or txn.trash).parent, staging.parent)):
        try:
            layout.fs_fsync(directory)
        except OSError as err:
            result["warnings"].append(f"cannot fsync {directory.name} after the commit: {err}")
    result["warnings"] += txn.complete()
    return result


def _fail(txn: Txn, err: OSError, created: list[Path]) -> NoReturn:
    try:
        txn.undo()
    except (OSError, RpcFail) as undo_err:
        raise RpcFail(
            f"Finalizing the export of {txn.instance} failed ({err}) and undoing it failed"
            f" too ({undo_err}); nothing was deleted: the next export, its abort or the"
            f" watcher restores the previous export (journal {txn.path.name})") from None
    _remove_dirs(created)
    raise RpcFail(f"Finalizing the export of {txn.instance} failed: {err}; the previous"
                  " export is untouched")
