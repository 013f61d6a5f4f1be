"""A reflink-capable scratch filesystem for tests and benchmarks.

Reflink snapshots need btrfs (or XFS with reflink), which the build host's
/tmp usually is not, so we make one: a sparse image on a loop device.  Loop
devices are scarce (8 on the CI machine) and tests run under pytest-xdist,
so each process mounts at most ONE filesystem, shared by all its tests, in a
well-known slot ``/tmp/ganeti-test-fs-<worker>`` that is guarded by a lock
file; a slot left behind by a crashed run is cleaned up by the next run that
takes its lock.

test/conftest.py registers the fixtures (reflink_fs, reflink_dir,
compressed_dir, noreflink_dir) for every test; use the module directly
(benchmarks, e2e helpers)::

    mountpoint, cleanup = mount_reflink_fs(Path("/tmp/my-slot"))
    mountpoint, cleanup = mount_reflink_fs(Path("/tmp/my-slot"), fstypes=("btrfs",),
                                           options=("compress=zstd",))

Transparent compression needs no filesystem of its own: on btrfs a directory
can compress what is written below it (``set_compression``, the
``btrfs.compression`` property, what ``compressed_dir`` uses), so the shared
filesystem serves both and no second loop device is taken.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from ganeti.storage import reflink

# sparse: costs only what is used; room for the incremental and compressing-fs e2e tests
IMAGE_SIZE = 4 * 1024 * 1024 * 1024
SLOT_PREFIX = "ganeti-test-fs-"
MAX_SLOTS_PER_WORKER = 3
_CMD_TIMEOUT = 120


class FsUnavailable(RuntimeError):
    """No reflink filesystem can be made here; the message says why."""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=_CMD_TIMEOUT, stdin=subprocess.DEVNULL)


def unavailable_reason() -> str | None:
    """Why a loop-mounted filesystem cannot be created (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to attach loop devices and mount"
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support (/dev/loop-control missing)"
    for tool in ("losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("mkfs.btrfs") is None and shutil.which("mkfs.xfs") is None:
        return "neither mkfs.btrfs (btrfs-progs) nor mkfs.xfs (xfsprogs) is installed"
    return None


def _loops_of(image: Path) -> list[str]:
    out = _run("losetup", "-j", str(image)).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if ":" in line]


def _teardown(image: Path, mnt: Path) -> list[str]:
    """Unmount and detach whatever belongs to this slot; returns problems seen."""
    problems = []
    if os.path.ismount(mnt):
        res = _run("umount", str(mnt))
        if res.returncode != 0:  # busy (a stray open file): detach lazily
            res = _run("umount", "-l", str(mnt))
            if res.returncode != 0:
                problems.append(f"umount {mnt}: {res.stderr.strip()}")
    if image.exists():
        for dev in _loops_of(image):
            res = _run("losetup", "-d", dev)
            if res.returncode != 0:
                problems.append(f"losetup -d {dev}: {res.stderr.strip()}")
        image.unlink(missing_ok=True)
    try:
        mnt.rmdir()
    except OSError:
        pass
    return problems


def mount_reflink_fs(base_dir: Path, size: int = IMAGE_SIZE,
                     fstypes: Sequence[str] = ("btrfs", "xfs"),
                     options: Sequence[str] = ()) -> tuple[Path, Callable[[], None]]:
    """Create and mount a reflink filesystem in ``base_dir`` (image + ``mnt/``).

    The first of ``fstypes`` that works is used, mounted with ``options``
    (``mount -o``, e.g. ``compress=zstd`` for btrfs).

    Leftovers of a previous run in the same ``base_dir`` are removed first.
    Returns the mountpoint and an idempotent cleanup function; raises
    :class:`FsUnavailable` when no such filesystem can be made.
    """
    reason = unavailable_reason()
    if reason:
        raise FsUnavailable(reason)
    base_dir.mkdir(parents=True, exist_ok=True)
    image, mnt = base_dir / "image", base_dir / "mnt"
    _teardown(image, mnt)
    with open(image, "wb") as fh:
        fh.truncate(size)
    res = _run("losetup", "--find", "--show", str(image))
    if res.returncode != 0:
        image.unlink(missing_ok=True)
        raise FsUnavailable(f"cannot attach a loop device: {res.stderr.strip()}")
    dev = res.stdout.strip()
    done = threading.Lock()

    def cleanup() -> None:
        if done.acquire(blocking=False):
            problems = _teardown(image, mnt)
            if problems:
                raise RuntimeError("; ".join(problems))

    try:
        errors = []
        commands = {"btrfs": ["mkfs.btrfs", "-q", "-f", dev],
                    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1", dev]}
        for mkfs in (commands[fstype] for fstype in fstypes):
            if shutil.which(mkfs[0]) is None:
                continue
            made = _run(*mkfs)
            if made.returncode == 0:
                mnt.mkdir(exist_ok=True)
                mount_opts = ["-o", ",".join(options)] if options else []
                mounted = _run("mount", *mount_opts, dev, str(mnt))
                if mounted.returncode == 0 and reflink.supports_reflink(mnt):
                    return mnt, cleanup
                errors.append(f"{mkfs[0]}: mount/reflink failed: {mounted.stderr.strip()}")
                _run("umount", str(mnt))
            else:
                errors.append(f"{mkfs[0]}: {made.stderr.strip()}")
        raise FsUnavailable("no reflink filesystem could be created: " + "; ".join(errors))
    except BaseException:
        cleanup()
        raise


class _SharedFs:
    """The one filesystem of this process, reference-counted across fixture users."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.mountpoint: Path | None = None
        self.failure: str | None = None
        self._cleanup: Callable[[], None] | None = None
        self._slot_fd = -1
        self._counter = 0

    def acquire(self) -> Path:
        with self.lock:
            if self.failure is not None:
                raise FsUnavailable(self.failure)
            if self.mountpoint is None:
                try:
                    self._mount()
                except FsUnavailable as err:
                    self.failure = str(err)
                    raise
            self.users += 1
            assert self.mountpoint is not None
            return self.mountpoint

    def _mount(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise FsUnavailable(reason)
        worker = re.sub(r"[^A-Za-z0-9_-]", "_", os.environ.get("PYTEST_XDIST_WORKER", "main"))
        tmp = Path(tempfile.gettempdir())
        for n in range(MAX_SLOTS_PER_WORKER):
            # a concurrent session (another checkout) may hold our usual slot
            slot = tmp / f"{SLOT_PREFIX}{worker}{f'-{n}' if n else ''}"
            fd = os.open(f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                self.mountpoint, self._cleanup = mount_reflink_fs(slot)
            except BaseException:
                os.close(fd)
                raise
            self._slot_fd = fd
            atexit.register(self.shutdown)
            return
        raise FsUnavailable(f"all {MAX_SLOTS_PER_WORKER} test filesystem slots of worker"
                            f" {worker} are in use by other test runs")

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                self._shutdown_locked()

    def shutdown(self) -> None:
        with self.lock:
            self._shutdown_locked()

    def _shutdown_locked(self) -> None:
        cleanup, self._cleanup, self.mountpoint = self._cleanup, None, None
        try:
            if cleanup is not None:
                cleanup()
        finally:
            if self._slot_fd >= 0:
                os.close(self._slot_fd)
                self._slot_fd = -1

    def new_dir(self, label: str) -> Path:
        with self.lock:
            assert self.mountpoint is not None
            self._counter += 1
            path = self.mountpoint / f"{self._counter:04d}-{label[:60]}"
        path.mkdir()
        return path


_SHARED = _SharedFs()


def _label(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)


@pytest.fixture(scope="session")
def reflink_fs() -> Iterator[Path]:
    """Mountpoint of this worker's reflink filesystem (skips when none can be made)."""
    try:
        mountpoint = _SHARED.acquire()
    except FsUnavailable as err:
        pytest.skip(f"no reflink test filesystem: {err}")
    try:
        yield mountpoint
    finally:
        _SHARED.release()


@pytest.fixture
def reflink_dir(reflink_fs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh, empty directory on the reflink filesystem, removed after the test."""
    path = _SHARED.new_dir(_label(request))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def set_compression(directory: Path, algorithm: str = "zstd") -> None:
    """Make btrfs compress every file created below ``directory`` from now on.

    Raises :class:`FsUnavailable` where that is not possible (not btrfs, no
    btrfs-progs, a kernel without the algorithm).
    """
    if shutil.which("btrfs") is None:
        raise FsUnavailable("btrfs (btrfs-progs) is not installed")
    res = _run("btrfs", "property", "set", str(directory), "compression", algorithm)
    if res.returncode != 0:
        raise FsUnavailable(f"cannot make {directory} compress with {algorithm}:"
                            f" {res.stderr.strip() or res.stdout.strip()}")
    got = _run("btrfs", "property", "get", str(directory), "compression").stdout
    if f"compression={algorithm}" not in got:
        raise FsUnavailable(f"{directory} does not compress with {algorithm}: {got.strip()}")


@pytest.fixture
def compressed_dir(reflink_dir: Path) -> Path:
    """A fresh directory on the reflink filesystem whose new files btrfs stores
    compressed with zstd (skips where the filesystem cannot compress)."""
    try:
        set_compression(reflink_dir)
    except FsUnavailable as err:
        pytest.skip(f"no compressing test filesystem: {err}")
    return reflink_dir


def find_noreflink_base(candidates: list[Path]) -> Path | None:
    """First candidate directory whose filesystem cannot clone files."""
    for base in candidates:
        if base.is_dir() and os.access(base, os.W_OK) and not reflink.supports_reflink(base):
            return base
    return None


@pytest.fixture
def noreflink_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory on a filesystem WITHOUT reflink (ext4, tmpfs, ...)."""
    base = find_noreflink_base([tmp_path, Path("/dev/shm")])
    if base is None:
        pytest.skip("every candidate filesystem supports reflink; no fallback to test")
    if base == tmp_path:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix=f"ganeti-noreflink-{_label(request)[:40]}-",
                                 dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
