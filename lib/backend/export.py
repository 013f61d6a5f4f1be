"""Node side of exports: layout, staging, finalisation, listing and removal.

Layout under the node's export dir (instance names start with a letter or
digit, so the hidden names below never collide with an export):

- ``<instance>/``: the newest complete export (``config.ini`` plus dumps),
  Ganeti's layout;
- ``.staging/<instance>/``: an export being written (any valid name fits,
  ``inst.new`` included, and nothing is appended to it);
- ``.generations/<instance>/<name>/``: older generations
  (``ganeti.backend.export_generations``);
- ``.journal/<id>.json``: the intent record of a finalize in progress
  (``ganeti.backend.export_txn``);
- ``<dir>/.removed-<id>``: a tree being deleted (renamed first, so no
  half-deleted export is ever visible under its name), and
  ``.previous-<id>``: the previous export set aside when the filesystem
  cannot exchange two directories.  Neither grows with the instance name.

Every filesystem change of finalize, remove and recovery goes through the
``fs_*`` functions below, so a test can make the N-th one fail
(:data:`FAULT_HOOK`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import constants
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend.files import to_wire_name

STAGING_DIR = ".staging"
JOURNAL_DIR = ".journal"
# where a removed tree waits for deletion (hidden, so never listed)
TRASH_PREFIX = ".removed-"
ASIDE_PREFIX = ".previous-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

# Tests set this to a callable(op, paths) that may raise before an operation runs.
FAULT_HOOK: Callable[[str, tuple[Path, ...]], None] | None = None


def _check_name(instance_name: Any) -> str:
    if not isinstance(instance_name, str) or not _NAME_RE.match(instance_name):
        raise RpcFail(f"Invalid instance name for an export: {instance_name!r}")
    return instance_name


def export_path(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / _check_name(instance_name)


def staging_path(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / STAGING_DIR / _check_name(instance_name)


def new_token() -> str:
    """A short unique id (time-ordered): names that do not grow with the instance name."""
    return f"{time.time_ns():x}{secrets.token_hex(3)}"


# --- filesystem operations (one place for fault injection) ----------------------------


def _fault(op: str, *paths: Path) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(op, paths)


def fs_mkdir(path: Path, mode: int = 0o750) -> None:
    _fault("mkdir", path)
    os.mkdir(path, mode)


def fs_makedirs(path: Path, mode: int = 0o750) -> list[Path]:
    """mkdir -p; returns the directories it created, outermost first."""
    missing = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    created = []
    for directory in reversed(missing):
        try:
            fs_mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue            # a concurrent export of another instance made it
        created.append(directory)
    return created


def fs_rename(src: Path, dst: Path) -> None:
    _fault("rename", src, dst)
    os.rename(src, dst)


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                 _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fs_exchange(a: Path, b: Path) -> None:
    _fault("exchange", a, b)
    _exchange(a, b)


def fs_fsync(path: Path) -> None:
    """fsync a file or directory; unlike fileutils.fsync_dir a failure is raised."""
    _fault("fsync", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fs_write(path: Path, data: str, mode: int = 0o640) -> None:
    """Write a file durably under its final name (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".{new_token()}.tmp")
    _fault("create", tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
            _fault("fsync", tmp)
            os.fsync(fd)
        finally:
            os.close(fd)
        fs_rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fs_fsync(path.parent)


def fs_unlink(path: Path) -> None:
    _fault("unlink", path)
    os.unlink(path)


def fs_rmdir(path: Path) -> None:
    _fault("rmdir", path)
    os.rmdir(path)


def fs_rmtree(path: Path) -> None:
    _fault("rmtree", path)
    shutil.rmtree(path)


def _remove_tree(path: Path) -> bool:
    """Remove ``path`` so that no half-deleted export is ever visible under its name.

    The rename to a hidden trash name is the step that counts (an OSError
    there leaves everything as it was); deleting the trash may fail (EIO),
    then it stays a leftover for ``export_cleanup``.  Returns whether the
    tree is gone completely.
    """
    if not path.exists():
        return True
    trash = path.with_name(f"{TRASH_PREFIX}{new_token()}")
    fs_rename(path, trash)
    try:
        fs_fsync(path.parent)
        fs_rmtree(trash)
    except OSError:
        return False
    return True


# --- procedures ------------------------------------------------------------------------


def export_prepare(ctx: NodeContext, instance_name: str) -> str:
    """Create an empty staging directory (after finishing or undoing a crashed finalize).

    Returns its root-relative name, the form transfer specs use (every node
    of a local cluster has its own root).
    """
    from ganeti.backend import export_txn
    staging = staging_path(ctx, instance_name)
    export_txn.recover_instance(ctx, instance_name)
    try:
        fs_makedirs(staging.parent)
        _remove_tree(staging)      # a stale one; undeleted trash is a leftover
        fs_mkdir(staging)
    except OSError as err:
        raise RpcFail(f"Cannot create the staging directory of {instance_name}: {err}"
                      ) from None
    return to_wire_name(ctx.paths, staging)


def export_finalize(ctx: NodeContext, instance_name: str, config_text: str,
                    keep_generations: bool = False) -> dict[str, Any]:
    """Write config.ini into the staging dir and make it the instance's export.

    A transaction (``ganeti.backend.export_txn``): on failure the previous
    state is untouched; on success every previous export is kept as a
    generation when ``keep_generations``.  Returns the export's path and
    warnings (problems after the commit point, e.g. trash left to clean up).
    """
    from ganeti.backend import export_txn
    return export_txn.finalize(ctx, instance_name, config_text, keep_generations)


def export_abort(ctx: NodeContext, instance_name: str) -> bool:
    """Drop a staging directory; the previous export stays untouched.

    A half-done finalize of the instance is undone first: after a failed
    swap the staging name may hold the *previous* export.
    """
    from ganeti.backend import export_txn
    export_txn.recover_instance(ctx, instance_name)
    staging = staging_path(ctx, instance_name)
    existed = staging.exists()
    try:
        _remove_tree(staging)
    except OSError as err:
        raise RpcFail(f"Cannot remove the staging directory of {instance_name}: {err}"
                      ) from None
    return existed


def export_list(ctx: NodeContext) -> list[str]:
    """Instances with a complete export on this node."""
    base = ctx.paths.export_dir
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir()
                  if _NAME_RE.match(entry.name) and entry.is_dir()
                  and (entry / constants.EXPORT_CONF_FILE).is_file())


def export_info(ctx: NodeContext, instance_name: str) -> dict[str, Any]:
    """config.ini text and the export's root-relative path on this node."""
    path = export_path(ctx, instance_name)
    try:
        text = (path / constants.EXPORT_CONF_FILE).read_text(errors="surrogateescape")
    except FileNotFoundError:
        raise RpcFail(f"No export of {instance_name} on this node") from None
    return {"path": to_wire_name(ctx.paths, path), "config": text}


def export_remove(ctx: NodeContext, instance_name: str) -> bool:
    """Remove the newest export: one rename to a trash name, then the deletion."""
    path = export_path(ctx, instance_name)
    if not (path / constants.EXPORT_CONF_FILE).is_file():
        raise RpcFail(f"No export of {instance_name} on this node")
    export_meta.refuse_if_protected(path, f"The export of {instance_name}",
                                    f"gnt-backup unprotect {instance_name}")
    try:
        _remove_tree(path)
    except OSError as err:
        raise RpcFail(f"Cannot remove the export of {instance_name}: {err}") from None
    return True


def export_leftovers(ctx: NodeContext) -> list[str]:
    """Staging dirs, trash, set-aside exports and journals, relative to the export dir.

    Only looks: a staging dir is a leftover only when no export of its
    instance runs, which the caller knows (locks), not this node.
    """
    base = ctx.paths.export_dir
    found: list[str] = []
    if not base.is_dir():
        return found
    for entry in base.iterdir():
        if entry.name.startswith((TRASH_PREFIX, ASIDE_PREFIX)):
            found.append(entry.name)
    for sub in (STAGING_DIR, JOURNAL_DIR):
        if (base / sub).is_dir():
            found += [f"{sub}/{e.name}" for e in (base / sub).iterdir()]
    from ganeti.backend.export_generations import GENERATIONS_DIR
    gens = base / GENERATIONS_DIR
    if gens.is_dir():
        for inst in gens.iterdir():
            if inst.is_dir():
                found += [f"{GENERATIONS_DIR}/{inst.name}/{e.name}" for e in inst.iterdir()
                          if e.name.startswith(TRASH_PREFIX)]
    return sorted(found)


def export_cleanup(ctx: NodeContext) -> list[str]:
    """Finish or undo crashed finalizes, then remove the other leftovers.

    Run only when no export runs on the cluster (the watcher's cleanup LU
    holds every instance lock).  Returns what it handled; a journal whose
    recovery fails stays, with everything it refers to.
    """
    from ganeti.backend import export_txn
    base = ctx.paths.export_dir
    handled, keep = export_txn.recover_all(ctx)
    for name in export_leftovers(ctx):
        path = base / name
        if name in keep or any(path == p or p.is_relative_to(path) for p in
                               (base / k for k in keep)):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        handled.append(name)
    return sorted(set(handled))


PROCEDURES: dict[str, Callable[..., Any]] = {
    "export_prepare": export_prepare,
    "export_finalize": export_finalize,
    "export_abort": export_abort,
    "export_list": export_list,
    "export_info": export_info,
    "export_remove": export_remove,
    "export_cleanup": export_cleanup,
    "export_leftovers": export_leftovers,
}
