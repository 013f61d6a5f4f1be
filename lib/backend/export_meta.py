"""Node side of export protection, notes and verify records: the sidecar in an export's
directory.

Format and validation: ``ganeti.backup.exportmeta``.  The procedures that
change them are ``export_generations.export_generation_modify`` and
``export_verify.export_verify_record``; removal
procedures call :func:`refuse_if_protected` so that nothing but an explicit
unprotect can make a protected export go away.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from ganeti import constants
from ganeti.backend import RpcFail
from ganeti.backup import exportmeta
from ganeti.backup.exportmeta import ExportMeta
from ganeti.fileutils import atomic_write

# one read-change-write of a sidecar at a time (the node daemon serves calls in threads)
_UPDATE_LOCK = threading.Lock()


def read(path: Path) -> ExportMeta:
    """Never raises, never blocks (a FIFO, a symlink): see exportmeta.parse."""
    target = path / exportmeta.META_FILE
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return exportmeta.parse(None)
    except OSError as err:
        return ExportMeta(protected=True,
                          problem=f"cannot read {exportmeta.META_FILE}: {err.strerror}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ExportMeta(protected=True,
                              problem=f"{exportmeta.META_FILE} is not a regular file")
        raw = b""
        while len(raw) <= exportmeta.MAX_META_BYTES:
            chunk = os.read(fd, exportmeta.MAX_META_BYTES + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    except OSError as err:
        return ExportMeta(protected=True,
                          problem=f"cannot read {exportmeta.META_FILE}: {err.strerror}")
    finally:
        os.close(fd)
    return exportmeta.parse(raw)


def write(path: Path, meta: ExportMeta) -> None:
    """Replace the sidecar atomically; an export with nothing set has none."""
    target = path / exportmeta.META_FILE
    if exportmeta.is_empty(meta):
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        return
    atomic_write(target, exportmeta.render(meta), 0o640)


def write_if_present(path: Path, meta: ExportMeta) -> None:
    """Like write, for a directory that a concurrent removal may take away.

    A removal renames the directory before deleting it; writing after that
    would recreate it holding nothing but the sidecar, so such a leftover is
    removed again and the change reported as failed.
    """
    write(path, meta)
    if not (path / constants.EXPORT_CONF_FILE).is_file():
        try:
            os.unlink(path / exportmeta.META_FILE)
            path.rmdir()
        except OSError:
            pass
        raise RpcFail(f"{path.name} was removed while its metadata was being changed")


def update(path: Path, change: Callable[[ExportMeta], ExportMeta]) -> ExportMeta:
    """Read, change and write a sidecar as one step, so that a verify record and a
    protection or note set at the same moment (verify takes no instance lock) never
    lose each other; ``change`` may raise to leave it as it is."""
    with _UPDATE_LOCK:
        meta = change(read(path))
        write_if_present(path, meta)
        return meta


def refuse_if_protected(path: Path, what: str, unprotect_hint: str) -> None:
    meta = read(path)
    if meta.protected:
        why = f" (counted as protected: {meta.problem})" if meta.problem else ""
        raise RpcFail(f"{what} is protected{why}; unprotect it first with"
                      f" '{unprotect_hint}'")
