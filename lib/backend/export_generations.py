"""Node side of retained export generations: the procedures (doc/export-format.md,
"Generations").

The newest export of an instance stays at ``<export_dir>/<instance>/`` in
Ganeti's layout; older ones kept by a retention policy live in
``<export_dir>/.generations/<instance>/<UTC time>/`` (e.g.
``20261129T031500Z``), hidden from Ganeti-style tools.  A generation is
named by the ``[export] timestamp`` of its config.ini; the newest one has a
name too, so users can address every generation the same way.  Names are
unique per instance and node and never change: when a name is taken (two
exports in the same second), the new export gets the next free ``-<n>``
suffix, recorded in its hidden ``.generation`` file (exports without one are
named by their timestamp, as before).  The naming rules themselves live in
``ganeti.backend.export_layout`` (finalize names generations too).
"""

from __future__ import annotations

import os
from pathlib import Path

from ganeti import constants, pathutils
from ganeti.backend import NodeContext, RpcFail, export_meta
from ganeti.backend.export import export_list
from ganeti.backend.export_layout import (
    GEN_NAME_FILE,
    GEN_RE,
    GENERATIONS_DIR,
    check_generation,
    dump_sizes,
    export_name,
    export_path,
    export_timestamp,
    generation_name,
    generations_root,
    remove_tree,
)
from ganeti.backup import exportmeta
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import ExportLocation, ExportMetaInfo, GenerationInfo
from ganeti.storage import usage

# the procedures, and layout names callers may keep importing from here
__all__ = [
    "GENERATIONS_DIR",
    "GEN_NAME_FILE",
    "GEN_RE",
    "check_generation",
    "export_generation_info",
    "export_generation_modify",
    "export_generation_remove",
    "export_generations",
    "export_name",
    "export_path",
    "export_timestamp",
    "find_generation",
    "generation_name",
    "generations_root",
    "remove_tree",
]


def _describe(ctx: NodeContext, instance: str, path: Path, newest: bool, name: str,
              use: usage.Usage | None) -> GenerationInfo:
    stamp = export_timestamp(path)
    meta = export_meta.read(path)
    info: GenerationInfo = {
        "instance": instance, "generation": name or generation_name(stamp),
        "timestamp": stamp, "size": _apparent_size(path), "newest": newest,
        "path": pathutils.to_wire_name(ctx.paths, path),
        "protected": meta.protected, "note": meta.note, "meta_problem": meta.problem,
        "verify": meta.verify}
    if use is not None:
        info["size"], info["used"] = use.size, use.used
        info["unique"], info["shared"] = use.unique, use.shared
    return info


def _apparent_size(path: Path) -> int:
    total = 0
    for file in usage.directory_files(path):
        try:
            total += file.stat().st_size
        except OSError:
            continue
    return total


def _describe_instance(ctx: NodeContext, instance: str, with_usage: bool
                       ) -> list[GenerationInfo]:
    """The instance's generations here (the newest export first); with usage, unique
    and shared bytes are counted across all of them (ganeti.storage.usage)."""
    found: list[tuple[Path, bool, str]] = []
    newest = export_path(ctx, instance)
    if (newest / constants.EXPORT_CONF_FILE).is_file():
        found.append((newest, True, export_name(newest)))
    root = generations_root(ctx, instance)
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if GEN_RE.match(entry.name) and (entry / constants.EXPORT_CONF_FILE).is_file():
                found.append((entry, False, entry.name))
    uses: list[usage.Usage | None] = [None] * len(found)
    if with_usage:
        uses = list(usage.generation_usage([usage.directory_files(path)
                                            for path, _n, _g in found]))
    return [_describe(ctx, instance, path, is_newest, name, use)
            for (path, is_newest, name), use in zip(found, uses, strict=True)]


@procedure("normal")
def export_generations(ctx: NodeContext, instance_names: list[str] | None = None,
                       usage: bool = False) -> list[GenerationInfo]:
    """Every export generation here (newest exports included) with timestamp and size.

    ``usage`` adds used, unique and shared bytes: it maps the extents of every
    file (milliseconds per generation, more on a compressing btrfs), which only
    the listing needs, not prune, verify or an import's lookup.
    """
    wanted = set(instance_names) if instance_names else None
    names = set(export_list(ctx))
    gen_base = ctx.paths.export_dir / GENERATIONS_DIR
    if gen_base.is_dir():
        names.update(e.name for e in gen_base.iterdir() if e.is_dir())
    result: list[GenerationInfo] = []
    for inst in sorted(names):
        if wanted is not None and inst not in wanted:
            continue
        result.extend(_describe_instance(ctx, inst, usage))
    return result


def _find(ctx: NodeContext, instance_name: str, generation: str) -> tuple[Path, bool]:
    check_generation(generation)
    older = generations_root(ctx, instance_name) / generation
    if (older / constants.EXPORT_CONF_FILE).is_file():
        return older, False
    newest = export_path(ctx, instance_name)
    if ((newest / constants.EXPORT_CONF_FILE).is_file()
            and export_name(newest) == generation):
        return newest, True
    raise RpcFail(f"No export generation {generation} of {instance_name} on this node")


# for other export procedures (verify)
find_generation = _find


@procedure("fast", single_node=True)
def export_generation_info(ctx: NodeContext, instance_name: str,
                           generation: str) -> ExportLocation:
    """config.ini text and path of one export generation (older or the newest)."""
    path, _newest = _find(ctx, instance_name, generation)
    text = (path / constants.EXPORT_CONF_FILE).read_text(errors="surrogateescape")
    return {"path": pathutils.to_wire_name(ctx.paths, path), "config": text,
            "files": dump_sizes(path, text), "real_path": os.path.realpath(path)}


@procedure("normal", single_node=True)
def export_generation_remove(ctx: NodeContext, instance_name: str, generation: str) -> bool:
    """Remove an older export generation (refused while it is protected).

    The newest stays: it is the Ganeti-visible export.
    """
    path, newest = _find(ctx, instance_name, generation)
    if newest:
        raise RpcFail(f"Generation {generation} is the newest export of {instance_name};"
                      " remove it with gnt-backup remove")
    export_meta.refuse_if_protected(path, f"Generation {generation} of {instance_name}",
                                    f"gnt-backup unprotect {instance_name}@{generation}")
    remove_tree(path)
    return True


@procedure("normal", single_node=True)
def export_generation_modify(ctx: NodeContext, instance_name: str, generation: str | None,
                             protected: bool | None, note: str | None) -> ExportMetaInfo:
    """Set the protection and/or note of a generation (generation None: the newest export).
    """
    if generation is None:
        path = export_path(ctx, instance_name)
        if not (path / constants.EXPORT_CONF_FILE).is_file():
            raise RpcFail(f"No export of {instance_name} on this node")
    else:
        path, _newest = _find(ctx, instance_name, generation)

    def change(current: exportmeta.ExportMeta) -> exportmeta.ExportMeta:
        try:
            return exportmeta.ExportMeta(
                protected=current.protected if protected is None
                else exportmeta.check_protected(protected),
                note=current.note if note is None else exportmeta.check_note(note),
                verify=current.verify)
        except exportmeta.MetaError as err:
            raise RpcFail(f"Invalid value for {err}") from None

    meta = export_meta.update(path, change)
    return {"protected": meta.protected, "note": meta.note}
