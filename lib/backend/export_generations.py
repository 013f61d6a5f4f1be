"""Node side of retained export generations (doc/export-format.md, "Generations").

The newest export of an instance stays at ``<export_dir>/<instance>/`` in
Ganeti's layout; older ones kept by a retention policy live in
``<export_dir>/.generations/<instance>/<UTC time>/`` (e.g.
``20261129T031500Z``), hidden from Ganeti-style tools.  A generation is
named by the ``[export] timestamp`` of its config.ini; the newest one has a
name too, so users can address every generation the same way.  Names are
unique per instance and node and never change: when a name is taken (two
exports in the same second), the new export gets the next free ``-<n>``
suffix, recorded in its hidden ``.generation`` file (exports without one are
named by their timestamp, as before).
"""

from __future__ import annotations

import configparser
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import constants
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend.export import _remove_tree, export_list, export_path
from ganeti.backend.files import to_wire_name
from ganeti.backup import exportmeta

GENERATIONS_DIR = ".generations"
# the generation name of an export whose timestamp name was already taken
GEN_NAME_FILE = ".generation"
_GEN_RE = re.compile(r"^\d{8}T\d{6}Z(-\d{1,4})?$")
_MAX_SUFFIX = 9999


def generation_name(timestamp: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(timestamp))


def _check_generation(generation: Any) -> str:
    if not isinstance(generation, str) or not _GEN_RE.match(generation):
        raise RpcFail(f"Invalid export generation {generation!r} (expected e.g."
                      " 20261129T031500Z)")
    return generation


def generations_root(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / GENERATIONS_DIR / export_path(ctx, instance_name).name


def _timestamp(path: Path) -> float:
    """The export's own timestamp; the directory's mtime if config.ini lacks one."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string((path / constants.EXPORT_CONF_FILE).read_text())
        return float(parser.get("export", "timestamp"))
    except (OSError, configparser.Error, ValueError):
        return path.stat().st_mtime


def export_name(path: Path) -> str:
    """The generation name of an export directory (newest or older)."""
    try:
        recorded = (path / GEN_NAME_FILE).read_text().strip()
    except OSError:
        recorded = ""
    return recorded if _GEN_RE.match(recorded) else generation_name(_timestamp(path))


def taken_names(ctx: NodeContext, instance_name: str) -> set[str]:
    """Names in use by the instance's generations on this node, the newest included."""
    root = generations_root(ctx, instance_name)
    names = {e.name for e in root.iterdir()} if root.is_dir() else set()
    newest = export_path(ctx, instance_name)
    if (newest / constants.EXPORT_CONF_FILE).is_file():
        names.add(export_name(newest))
    return names


def free_name(base: str, taken: set[str]) -> str:
    """``base`` or the first ``base-<n>`` not in ``taken``."""
    name, stem, suffix = base, base.split("-", 1)[0], 0
    while name in taken:
        suffix += 1
        if suffix > _MAX_SUFFIX:
            raise RpcFail(f"No free export generation name left for {stem}")
        name = f"{stem}-{suffix}"
    return name


def retire_target(ctx: NodeContext, instance_name: str, old_export: Path,
                  avoid: set[str]) -> Path:
    """Where a replaced export goes: its own name, unless that is taken (older data)."""
    root = generations_root(ctx, instance_name)
    own = export_name(old_export)
    taken = ({e.name for e in root.iterdir()} if root.is_dir() else set()) | avoid
    return root / (own if own not in taken else free_name(own, taken))


def _sizes(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files of one export."""
    size = used = 0
    for entry in path.iterdir():
        st = entry.stat()
        size += st.st_size
        used += st.st_blocks * 512
    return size, used


def _describe(ctx: NodeContext, instance: str, path: Path, newest: bool,
              name: str | None = None) -> dict[str, Any]:
    stamp = _timestamp(path)
    size, used = _sizes(path)
    meta = export_meta.read(path)
    return {"instance": instance, "generation": name or generation_name(stamp),
            "timestamp": stamp, "size": size, "used": used, "newest": newest,
            "path": to_wire_name(ctx.paths, path),
            "protected": meta.protected, "note": meta.note, "meta_problem": meta.problem}


def export_generations(ctx: NodeContext, instance_names: list[str] | None = None
                       ) -> list[dict[str, Any]]:
    """Every complete generation on this node (newest exports included)."""
    wanted = set(instance_names) if instance_names else None
    names = set(export_list(ctx))
    gen_base = ctx.paths.export_dir / GENERATIONS_DIR
    if gen_base.is_dir():
        names.update(e.name for e in gen_base.iterdir() if e.is_dir())
    result: list[dict[str, Any]] = []
    for inst in sorted(names):
        if wanted is not None and inst not in wanted:
            continue
        newest = export_path(ctx, inst)
        if (newest / constants.EXPORT_CONF_FILE).is_file():
            result.append(_describe(ctx, inst, newest, True, export_name(newest)))
        root = generations_root(ctx, inst)
        if root.is_dir():
            for entry in sorted(root.iterdir()):
                if _GEN_RE.match(entry.name) and (entry / constants.EXPORT_CONF_FILE).is_file():
                    result.append(_describe(ctx, inst, entry, False, entry.name))
    return result


def _find(ctx: NodeContext, instance_name: str, generation: str) -> tuple[Path, bool]:
    _check_generation(generation)
    older = generations_root(ctx, instance_name) / generation
    if (older / constants.EXPORT_CONF_FILE).is_file():
        return older, False
    newest = export_path(ctx, instance_name)
    if ((newest / constants.EXPORT_CONF_FILE).is_file()
            and export_name(newest) == generation):
        return newest, True
    raise RpcFail(f"No export generation {generation} of {instance_name} on this node")


def export_generation_info(ctx: NodeContext, instance_name: str,
                           generation: str) -> dict[str, Any]:
    """Like export_info, for a named generation (older or the newest)."""
    path, _newest = _find(ctx, instance_name, generation)
    return {"path": to_wire_name(ctx.paths, path),
            "config": (path / constants.EXPORT_CONF_FILE).read_text(errors="surrogateescape")}


def export_generation_remove(ctx: NodeContext, instance_name: str, generation: str) -> bool:
    """Remove an older generation; the newest stays (it is the Ganeti-visible export)."""
    path, newest = _find(ctx, instance_name, generation)
    if newest:
        raise RpcFail(f"Generation {generation} is the newest export of {instance_name};"
                      " remove it with gnt-backup remove")
    export_meta.refuse_if_protected(path, f"Generation {generation} of {instance_name}",
                                    f"gnt-backup unprotect {instance_name}@{generation}")
    _remove_tree(path)
    return True


def export_generation_modify(ctx: NodeContext, instance_name: str, generation: str | None,
                             protected: bool | None, note: str | None) -> dict[str, Any]:
    """Set protection and/or the note of a generation (None: the newest export)."""
    if generation is None:
        path = export_path(ctx, instance_name)
        if not (path / constants.EXPORT_CONF_FILE).is_file():
            raise RpcFail(f"No export of {instance_name} on this node")
    else:
        path, _newest = _find(ctx, instance_name, generation)
    current = export_meta.read(path)
    try:
        meta = exportmeta.ExportMeta(
            protected=current.protected if protected is None
            else exportmeta.check_protected(protected),
            note=current.note if note is None else exportmeta.check_note(note))
    except exportmeta.MetaError as err:
        raise RpcFail(f"Invalid value for {err}") from None
    export_meta.write_if_present(path, meta)
    return {"protected": meta.protected, "note": meta.note}


PROCEDURES: dict[str, Callable[..., Any]] = {
    "export_generations": export_generations,
    "export_generation_info": export_generation_info,
    "export_generation_remove": export_generation_remove,
    "export_generation_modify": export_generation_modify,
}
