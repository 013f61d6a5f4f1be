"""Node side of exports: staging, finalisation, listing and removal (procedures).

The directory layout and the filesystem operations are in
``ganeti.backend.export_layout``; finalize is a transaction
(``ganeti.backend.export_txn``); older generations are served by
``ganeti.backend.export_generations``.
"""

from __future__ import annotations

import os
import shutil

from ganeti import constants, pathutils
from ganeti.backend import NodeContext, RpcFail, export_meta, export_txn
from ganeti.backend.export_layout import (
    ASIDE_PREFIX,
    GENERATIONS_DIR,
    JOURNAL_DIR,
    NAME_RE,
    STAGING_DIR,
    TRASH_PREFIX,
    dump_sizes,
    export_path,
    fs_makedirs,
    fs_mkdir,
    remove_tree,
    staging_path,
)
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import ExportLocation, FinalizeResult

# the procedures, and layout names callers may keep importing from here
__all__ = [
    "ASIDE_PREFIX",
    "GENERATIONS_DIR",
    "JOURNAL_DIR",
    "NAME_RE",
    "STAGING_DIR",
    "TRASH_PREFIX",
    "export_abort",
    "export_cleanup",
    "export_finalize",
    "export_info",
    "export_leftovers",
    "export_list",
    "export_path",
    "export_prepare",
    "export_remove",
    "fs_makedirs",
    "fs_mkdir",
    "remove_tree",
    "staging_path",
]

# --- procedures ------------------------------------------------------------------------


@procedure("normal", single_node=True)
def export_prepare(ctx: NodeContext, instance_name: str) -> str:
    """Create an empty staging dir for a new export; returns its path.

    A crashed finalize of the instance is finished or undone first.  The
    path is root-relative, the form transfer specs use (every node of a
    local cluster has its own root).
    """
    staging = staging_path(ctx, instance_name)
    export_txn.recover_instance(ctx, instance_name)
    try:
        fs_makedirs(staging.parent)
        remove_tree(staging)      # a stale one; undeleted trash is a leftover
        fs_mkdir(staging)
    except OSError as err:
        raise RpcFail(f"Cannot create the staging directory of {instance_name}: {err}"
                      ) from None
    return pathutils.to_wire_name(ctx.paths, staging)


@procedure("slow", single_node=True)
def export_finalize(ctx: NodeContext, instance_name: str, config_text: str,
                    keep_generations: bool = False) -> FinalizeResult:
    """Write config.ini and atomically replace the previous export (keeping it as an
    older generation when asked).

    A transaction (``ganeti.backend.export_txn``): on failure the previous
    state is untouched; on success every previous export is kept as a
    generation when ``keep_generations``.  Returns the export's path and
    warnings (problems after the commit point, e.g. trash left to clean up).
    """
    return export_txn.finalize(ctx, instance_name, config_text, keep_generations)


@procedure("normal", single_node=True)
def export_abort(ctx: NodeContext, instance_name: str) -> bool:
    """Drop a staging dir (the previous export stays).

    A half-done finalize of the instance is undone first: after a failed
    swap the staging name may hold the *previous* export.
    """
    export_txn.recover_instance(ctx, instance_name)
    staging = staging_path(ctx, instance_name)
    existed = staging.exists()
    try:
        remove_tree(staging)
    except OSError as err:
        raise RpcFail(f"Cannot remove the staging directory of {instance_name}: {err}"
                      ) from None
    return existed


@procedure("fast")
def export_list(ctx: NodeContext) -> list[str]:
    """Instances with a complete export here."""
    base = ctx.paths.export_dir
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir()
                  if NAME_RE.match(entry.name) and entry.is_dir()
                  and (entry / constants.EXPORT_CONF_FILE).is_file())


@procedure("fast", single_node=True)
def export_info(ctx: NodeContext, instance_name: str) -> ExportLocation:
    """config.ini text and (root-relative) path of an export."""
    path = export_path(ctx, instance_name)
    try:
        text = (path / constants.EXPORT_CONF_FILE).read_text(errors="surrogateescape")
    except FileNotFoundError:
        raise RpcFail(f"No export of {instance_name} on this node") from None
    return {"path": pathutils.to_wire_name(ctx.paths, path), "config": text,
            "files": dump_sizes(path, text), "real_path": os.path.realpath(path)}


@procedure("normal", single_node=True)
def export_remove(ctx: NodeContext, instance_name: str) -> bool:
    """Remove an export: one rename to a trash name, then the deletion."""
    path = export_path(ctx, instance_name)
    if not (path / constants.EXPORT_CONF_FILE).is_file():
        raise RpcFail(f"No export of {instance_name} on this node")
    export_meta.refuse_if_protected(path, f"The export of {instance_name}",
                                    f"gnt-backup unprotect {instance_name}")
    try:
        remove_tree(path)
    except OSError as err:
        raise RpcFail(f"Cannot remove the export of {instance_name}: {err}") from None
    return True


@procedure("fast")
def export_leftovers(ctx: NodeContext) -> list[str]:
    """Staging, trash and journal entries of exports (only looks).

    Names are relative to the export dir.  A staging dir is a leftover only
    when no export of its instance runs, which the caller knows (locks), not
    this node.
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
    gens = base / GENERATIONS_DIR
    if gens.is_dir():
        for inst in gens.iterdir():
            if inst.is_dir():
                found += [f"{GENERATIONS_DIR}/{inst.name}/{e.name}" for e in inst.iterdir()
                          if e.name.startswith(TRASH_PREFIX)]
    return sorted(found)


@procedure("normal")
def export_cleanup(ctx: NodeContext) -> list[str]:
    """Finish or undo interrupted finalizes, remove other export leftovers.

    Run only when no export runs on the cluster (the watcher's cleanup LU
    holds every instance lock).  Returns what it handled; a journal whose
    recovery fails stays, with everything it refers to.
    """
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
