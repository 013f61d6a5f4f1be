"""Node side of exports: staging, atomic finalisation, listing and removal.

Layout under the node's export dir: ``<instance>/`` is a complete export
(``config.ini`` plus dump files); ``<instance>.new/`` is one being written.
Finalising swaps the two directories in one step (renameat2 with
RENAME_EXCHANGE), so readers see the previous export or the new one, never
a partial one; the previous export is deleted only after the swap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import constants
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend.files import to_wire_name
from ganeti.fileutils import atomic_write, fsync_dir

STAGING_SUFFIX = ".new"
# where a removed export waits for deletion (hidden, so never listed)
TRASH_PREFIX = ".removed-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _check_name(instance_name: Any) -> str:
    if (not isinstance(instance_name, str) or not _NAME_RE.match(instance_name)
            or instance_name.endswith(STAGING_SUFFIX)):
        raise RpcFail(f"Invalid instance name for an export: {instance_name!r}")
    return instance_name


def export_path(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / _check_name(instance_name)


def staging_path(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / (_check_name(instance_name) + STAGING_SUFFIX)


def _remove_tree(path: Path) -> None:
    """Remove ``path`` so that no half-deleted export is ever visible under its name."""
    if not path.exists():
        return
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}-{id(path)}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                 _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def export_prepare(ctx: NodeContext, instance_name: str) -> str:
    """Create an empty staging directory (dropping a stale one).

    Returns its root-relative name, the form transfer specs use (every node
    of a local cluster has its own root).
    """
    staging = staging_path(ctx, instance_name)
    ctx.paths.export_dir.mkdir(parents=True, exist_ok=True)
    _remove_tree(staging)
    staging.mkdir(mode=0o750)
    return to_wire_name(ctx.paths, staging)


def export_finalize(ctx: NodeContext, instance_name: str, config_text: str,
                    keep_generations: bool = False) -> str:
    """Write config.ini into the staging dir and make it the instance's export.

    With ``keep_generations`` the previous export is moved under the hidden
    generations dir (``ganeti.backend.export_generations``) instead of deleted.
    """
    staging = staging_path(ctx, instance_name)
    final = export_path(ctx, instance_name)
    if not staging.is_dir():
        raise RpcFail(f"No export of {instance_name} is being written on this node")
    for dump in staging.iterdir():
        with open(dump, "rb") as handle:
            os.fsync(handle.fileno())
    atomic_write(staging / constants.EXPORT_CONF_FILE, config_text, 0o640)
    if final.exists():
        try:
            _exchange(staging, final)
        except OSError:
            # no RENAME_EXCHANGE (old kernel or filesystem): move the old one
            # aside first; a crash in between leaves no partial export visible
            aside = final.with_name(f"{TRASH_PREFIX}{final.name}")
            _remove_tree(aside)
            os.rename(final, aside)
            os.rename(staging, final)
            staging = aside
        fsync_dir(ctx.paths.export_dir)
        if keep_generations:      # staging now holds the previous export
            from ganeti.backend import export_generations
            export_generations.retire(ctx, instance_name, staging)
        else:
            _remove_tree(staging)
    else:
        os.rename(staging, final)
    fsync_dir(ctx.paths.export_dir)
    return str(final)


def export_abort(ctx: NodeContext, instance_name: str) -> bool:
    """Drop a staging directory; the previous export stays untouched."""
    staging = staging_path(ctx, instance_name)
    existed = staging.exists()
    _remove_tree(staging)
    return existed


def export_list(ctx: NodeContext) -> list[str]:
    """Instances with a complete export on this node."""
    base = ctx.paths.export_dir
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir()
                  if entry.is_dir() and _NAME_RE.match(entry.name)
                  and not entry.name.endswith(STAGING_SUFFIX)
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
    path = export_path(ctx, instance_name)
    if not (path / constants.EXPORT_CONF_FILE).is_file():
        raise RpcFail(f"No export of {instance_name} on this node")
    export_meta.refuse_if_protected(path, f"The export of {instance_name}",
                                    f"gnt-backup unprotect {instance_name}")
    _remove_tree(path)
    return True


def export_cleanup(ctx: NodeContext) -> list[str]:
    """Remove leftovers of interrupted exports (staging and trash dirs)."""
    base = ctx.paths.export_dir
    removed: list[str] = []
    if not base.is_dir():
        return removed
    for entry in base.iterdir():
        if entry.name.endswith(STAGING_SUFFIX) or entry.name.startswith(TRASH_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return sorted(removed)


PROCEDURES: dict[str, Callable[..., Any]] = {
    "export_prepare": export_prepare,
    "export_finalize": export_finalize,
    "export_abort": export_abort,
    "export_list": export_list,
    "export_info": export_info,
    "export_remove": export_remove,
    "export_cleanup": export_cleanup,
}
