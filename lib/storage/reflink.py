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
from collections.abc import Callable
from pathlib import Path

from ganeti import errors
from ganeti.storage.base import SnapshotUnsupportedError
from ganeti.storage.extents import DiskReader

FICLONE = 0x40049409

# errno values meaning "this filesystem (or pair of files) cannot share blocks"
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV,
                          errno.ENOSYS})

# copy_file_range cannot do this pair (other filesystem types, old kernel): pread/pwrite
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
_COPY_STEP = 64 * 1024 * 1024


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


def clone_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                  should_stop: Callable[[], bool] | None = None) -> str:
    """Create ``dst`` (must not exist, mode 0600) with ``src``'s content.

    A reflink clone where the filesystem can share blocks ("reflink"), else
    a local sparse copy of the data regions only, holes staying holes
    ("copy").  Any failure removes ``dst`` again, so no half copy is left;
    so does ``should_stop()`` turning true between two 64 MiB steps of a copy.
    """
    try:
        clone_file(src, dst)
    except SnapshotUnsupportedError:
        pass
    else:
        return "reflink"
    try:
        reader = DiskReader(src)
    except errors.StorageError as err:
        raise errors.StorageError(f"Cannot copy {src}: {err}") from None
    with reader:
        try:
            dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise errors.StorageError(f"Cannot copy {src}: {dst} already exists") from None
        except OSError as err:
            raise errors.StorageError(f"Cannot create {dst}: {err}") from None
        try:
            os.ftruncate(dst_fd, reader.size)
            use_range = True
            for offset, length in reader.extents(chunk=_COPY_STEP):
                if should_stop is not None and should_stop():
                    raise errors.StorageError(f"Copying {src} to {dst} was stopped")
                if use_range:
                    try:
                        _copy_range(reader.fileno(), dst_fd, offset, length)
                        continue
                    except OSError as err:
                        if err.errno not in _NO_COPY_RANGE:
                            raise
                        use_range = False
                _copy_rw(reader.fileno(), dst_fd, offset, length)
        except OSError as err:
            os.close(dst_fd)
            os.unlink(dst)
            raise errors.StorageError(f"Copying {src} to {dst} failed: {err}") from None
        except BaseException:
            os.close(dst_fd)
            os.unlink(dst)
            raise
        os.close(dst_fd)
    return "copy"


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        got = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, offset + done)
        if got == 0:
            raise OSError(errno.EIO, f"source ended early at {offset + done}")
        done += got


def _copy_rw(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        data = os.pread(src_fd, min(length - done, 4 * 1024 * 1024), offset + done)
        if not data:
            raise OSError(errno.EIO, f"source ended early at {offset + done}")
        view = memoryview(data)
        while view:
            wrote = os.pwrite(dst_fd, view, offset + done)
            view = view[wrote:]
            done += wrote
