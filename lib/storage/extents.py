"""Sparse-aware reading and writing of disk images.

Disk images are mostly holes; reading them byte by byte would move (and
possibly send over the network) gigabytes of zeros.  :class:`DiskReader`
reports only the data regions (``SEEK_DATA``/``SEEK_HOLE``) and
:class:`DiskWriter` leaves everything it is not given as a hole.  All I/O goes
through ``os.pread``/``os.pwrite`` with large buffers.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from ganeti import errors

CHUNK = 4 * 1024 * 1024

ProgressFn = Callable[[int, int], None]

_ZERO_CHUNK = bytes(CHUNK)
_ZERO_VIEW = memoryview(_ZERO_CHUNK)

# fallocate(2) modes (linux/falloc.h); os.posix_fallocate cannot punch holes
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
# errno values meaning "this filesystem cannot punch holes": write zeros instead
_NO_PUNCH = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


@functools.cache
def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


def allocated_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes the filesystem really allocated for a file (holes cost nothing)."""
    return os.stat(path).st_blocks * 512


def _device_size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)


class DiskReader:
    """Read-only view of an image file or block device.

    ``extents()`` yields ``(offset, length)`` data regions; where the kernel
    cannot tell holes apart (block devices, old filesystems) it yields the
    whole device as a single region, which is always correct.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise errors.StorageError(f"Cannot open {self.path} for reading: {err}") from None
        try:
            self.size = _device_size(self._fd)
            self.is_block_device = stat.S_ISBLK(os.fstat(self._fd).st_mode)
        except OSError:
            os.close(self._fd)
            raise

    def fileno(self) -> int:
        return self._fd

    def extents(self, chunk: int | None = None) -> Iterator[tuple[int, int]]:
        """Data regions in ascending order, each split to at most ``chunk`` bytes."""
        if chunk is not None and chunk <= 0:
            raise ValueError("chunk must be positive")
        for offset, length in self._regions():
            if chunk is None:
                yield offset, length
                continue
            end = offset + length
            while offset < end:
                step = min(chunk, end - offset)
                yield offset, step
                offset += step

    def _regions(self) -> Iterator[tuple[int, int]]:
        size = self.size
        if size == 0:
            return
        if self.is_block_device:
            yield 0, size
            return
        pos = 0
        while pos < size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole is left
                    return
                if pos == 0 and err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                    yield 0, size
                    return
                raise
            if start >= size:
                return
            end = min(os.lseek(self._fd, start, os.SEEK_HOLE), size)
            if end <= start:  # file changed under us; treat the rest as data
                end = size
            yield start, end - start
            pos = end

    def data_bytes(self) -> int:
        """Total length of the data regions (for progress and ETA)."""
        return sum(length for _, length in self._regions())

    def readinto(self, offset: int, buf: memoryview | bytearray) -> int:
        """Fill ``buf`` from ``offset``; returns bytes read (short only at the end)."""
        view = memoryview(buf).cast("B")
        total = 0
        while total < len(view):
            got = os.preadv(self._fd, [view[total:]], offset + total)
            if got == 0:
                break
            total += got
        return total

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        got = self.readinto(offset, buf)
        return bytes(buf[:got]) if got < length else bytes(buf)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class DiskWriter:
    """Writes data at offsets of an image of a fixed final size.

    For regular files everything not written stays a hole and reads as
    zeros (``holes_are_zero``).  On block devices old content would show
    through, so callers (``copy_sparse``) must write zeros explicitly there.
    """

    def __init__(self, path: str | os.PathLike[str], fd: int, size: int, *,
                 holes_are_zero: bool = True) -> None:
        """Wrap an open descriptor (owned from now on); use the factories normally."""
        self.path = Path(path)
        self.size = size
        self.holes_are_zero = holes_are_zero
        self._fd = fd

    @classmethod
    def create(cls, path: str | os.PathLike[str], size: int) -> DiskWriter:
        """Create or truncate a regular file to ``size`` bytes, all holes."""
        if size < 0:
            raise ValueError("size must not be negative")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISBLK(st.st_mode):
            writer = cls.for_existing(path)
            if writer.size < size:
                writer.close()
                raise errors.StorageError(
                    f"Device {path} ({writer.size} bytes) is smaller than {size} bytes")
            return writer
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise errors.StorageError(f"Cannot create {path}: {err}") from None
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            os.close(fd)
            raise errors.StorageError(f"Cannot size {path} to {size} bytes: {err}") from None
        return cls(path, fd, size)

    @classmethod
    def for_existing(cls, path: str | os.PathLike[str]) -> DiskWriter:
        """Rewrite an existing disk keeping its size (file: dropped to holes first)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise errors.StorageError(f"Cannot open {path} for writing: {err}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISBLK(st.st_mode):
                return cls(path, fd, os.lseek(fd, 0, os.SEEK_END), holes_are_zero=False)
            os.ftruncate(fd, 0)
            os.ftruncate(fd, st.st_size)
        except OSError as err:
            os.close(fd)
            raise errors.StorageError(f"Cannot prepare {path} for writing: {err}") from None
        return cls(path, fd, st.st_size)

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str], size: int) -> DiskWriter:
        """Write into a regular file keeping its content (a copy of a base dump).

        Only its length is set to ``size``, should it differ.
        """
        if size < 0:
            raise ValueError("size must not be negative")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as err:
            raise errors.StorageError(f"Cannot open {path} for writing: {err}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise errors.StorageError(f"{path} is not a regular file")
            if st.st_size != size:
                os.ftruncate(fd, size)
        except OSError as err:
            os.close(fd)
            raise errors.StorageError(f"Cannot size {path} to {size} bytes: {err}") from None
        except errors.StorageError:
            os.close(fd)
            raise
        return cls(path, fd, size)

    def fileno(self) -> int:
        return self._fd

    def punch(self, offset: int, length: int) -> None:
        """Make a range read as zeros: a hole where the filesystem can, else zeros."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise errors.StorageError(
                f"Hole of {length} bytes at {offset} is outside {self.path}"
                f" ({self.size} bytes)")
        if length == 0:
            return
        func = _libc_fallocate() if self.holes_are_zero else None
        if func is not None:
            if func(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                    length) == 0:
                return
            err = ctypes.get_errno()
            if err not in _NO_PUNCH:
                raise errors.StorageError(f"Punching a hole into {self.path} at {offset}"
                                          f" failed: {os.strerror(err)}")
        self.write_zeros(offset, length)

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise errors.StorageError(
                f"Write of {len(view)} bytes at {offset} is outside {self.path}"
                f" ({self.size} bytes)")
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], offset + done)
        except OSError as err:
            raise errors.StorageError(f"Write to {self.path} at {offset + done} failed:"
                                      f" {err}") from None

    def write_zeros(self, offset: int, length: int) -> None:
        """Explicit zeros, for targets whose holes do not read as zero."""
        end = offset + length
        while offset < end:
            step = min(CHUNK, end - offset)
            self.write_at(offset, _ZERO_VIEW[:step])
            offset += step

    def fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise errors.StorageError(f"fsync of {self.path} failed: {err}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Data is made durable only when the block ended without an error."""
        try:
            if exc_type is None:
                self.fsync()
        finally:
            self.close()


def open_reader(path: str | os.PathLike[str]) -> DiskReader:
    return DiskReader(path)


def open_writer(path: str | os.PathLike[str], size_bytes: int) -> DiskWriter:
    """A sparse file of the final size; unwritten ranges stay holes."""
    return DiskWriter.create(path, size_bytes)


def _is_zero(view: memoryview) -> bool:
    return all(view[pos:pos + CHUNK] == _ZERO_VIEW[:min(CHUNK, len(view) - pos)]
               for pos in range(0, len(view), CHUNK))


def copy_sparse(src: DiskReader, dst: DiskWriter, progress_cb: ProgressFn | None = None,
                *, chunk: int = CHUNK, skip_zeros: bool = True) -> int:
    """Copy the data regions of ``src`` to the same offsets of ``dst``.

    Returns the bytes read from ``src``.  ``progress_cb(done, total)`` is
    called after each chunk with totals over data regions.  With
    ``skip_zeros`` all-zero chunks are not written (they stay holes), which
    turns a thick source such as a block device into a sparse copy.
    """
    if dst.size < src.size:
        raise errors.StorageError(
            f"Target {dst.path} ({dst.size} bytes) is smaller than {src.path}"
            f" ({src.size} bytes)")
    total = src.data_bytes() if progress_cb is not None else 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    done = 0
    pos = 0
    skip = skip_zeros and dst.holes_are_zero
    for offset, length in src.extents(chunk=chunk):
        if not dst.holes_are_zero and offset > pos:
            dst.write_zeros(pos, offset - pos)
        got = src.readinto(offset, view[:length])
        part = view[:got]
        if not (skip and _is_zero(part)):
            dst.write_at(offset, part)
        done += got
        pos = offset + got
        if progress_cb is not None:
            progress_cb(done, total)
    if not dst.holes_are_zero and pos < src.size:
        dst.write_zeros(pos, src.size - pos)
    return done
