"""Crash-safe file replacement shared by the config store, crypto and node files,
and the stamp that tells a reader a file was replaced."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

LOG = logging.getLogger(__name__)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; the new file is already visible, so only warn on failure."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        LOG.warning("Cannot fsync directory %s: %s", directory, err)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, *,
                 mtime: float | None = None, exclusive: bool = False) -> os.stat_result:
    """Replace ``path`` so readers see the old or the new content, never a mix.

    The temp file has ``mode`` from the start (a key is never readable by
    others, not even briefly), is fsynced, then renamed (or, with
    ``exclusive``, hard-linked so an existing file is never overwritten:
    FileExistsError).  Returns the stat of the written file.
    """
    target = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, target)
            tmp.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)
    return st


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """What changes when the file is rewritten or replaced (None: cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
