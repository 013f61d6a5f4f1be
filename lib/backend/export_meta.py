"""Node side of export protection and notes: the sidecar in an export's directory.

Format and validation: ``ganeti.backup.exportmeta``.  The procedure that
changes them is ``export_generations.export_generation_modify``; removal
procedures call :func:`refuse_if_protected` so that nothing but an explicit
unprotect can make a protected export go away.
"""

from __future__ import annotations

import os
from pathlib import Path

from ganeti.backend import RpcFail
from ganeti.backup import exportmeta
from ganeti.backup.exportmeta import ExportMeta
from ganeti.fileutils import atomic_write


def read(path: Path) -> ExportMeta:
    """Never raises for bad content: see exportmeta.parse."""
    target = path / exportmeta.META_FILE
    try:
        with open(target, "rb") as handle:
            raw = handle.read(exportmeta.MAX_META_BYTES + 1)
    except FileNotFoundError:
        return exportmeta.parse(None)
    except OSError as err:
        return ExportMeta(protected=True,
                          problem=f"cannot read {exportmeta.META_FILE}: {err.strerror}")
    return exportmeta.parse(raw)


def write(path: Path, meta: ExportMeta) -> None:
    """Replace the sidecar atomically; an export with nothing set has none."""
    target = path / exportmeta.META_FILE
    if not meta.protected and not meta.note:
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        return
    atomic_write(target, exportmeta.render(meta), 0o640)


def refuse_if_protected(path: Path, what: str, unprotect_hint: str) -> None:
    meta = read(path)
    if meta.protected:
        why = f" (counted as protected: {meta.problem})" if meta.problem else ""
        raise RpcFail(f"{what} is protected{why}; unprotect it first with"
                      f" '{unprotect_hint}'")
