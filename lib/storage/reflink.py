"""Copy-on-write file clones (``FICLONE``), the basis of live file-disk snapshots.

A clone shares all blocks with its source and is taken atomically with
respect to ``write(2)`` calls on the source, so it is a consistent
point-in-time image even while an instance keeps writing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

from ganeti import errors
from ganeti.storage.base import SnapshotUnsupportedError

FICLONE = 0x40049409

# errno values meaning "this filesystem (or pair of files) cannot share blocks"
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV,
                          errno.ENOSYS})


def clone_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Create ``dst`` (must not exist) as a reflink clone of ``src``.

    On any failure ``dst`` is removed again so that no half-made copy is
    mistaken for a snapshot.
    """
    try:
        src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise errors.StorageError(f"Cannot open {src} for cloning: {err}") from None
    try:
        try:
            dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise errors.StorageError(f"Cannot clone {src}: {dst} already exists") from None
        try:
            fcntl.ioctl(dst_fd, FICLONE, src_fd)
        except OSError as err:
            os.close(dst_fd)
            dst_fd = -1
            os.unlink(dst)
            if err.errno in _UNSUPPORTED:
                raise SnapshotUnsupportedError(
                    f"Cannot snapshot {src}: the filesystem lacks reflink (FICLONE)"
                    f" support ({os.strerror(err.errno or 0)})") from None
            raise errors.StorageError(f"Cloning {src} to {dst} failed: {err}") from None
        finally:
            if dst_fd >= 0:
                os.close(dst_fd)
    finally:
        os.close(src_fd)


def supports_reflink(directory: str | os.PathLike[str]) -> bool:
    """Probe by cloning an empty scratch file inside ``directory``."""
    try:
        fd, name = tempfile.mkstemp(prefix=".reflink-probe-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    clone = Path(name + ".clone")
    try:
        clone_file(name, clone)
    except errors.StorageError:
        return False
    else:
        clone.unlink()
        return True
    finally:
        os.unlink(name)
