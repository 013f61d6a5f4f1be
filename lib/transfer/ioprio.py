"""I/O and CPU priority of the node daemon threads that copy export data.

The copy runs in threads of the node daemon, so a unit file's ``Nice=`` or
``IOSchedulingClass=`` would slow the whole daemon, not just the copy.  On
Linux both priorities belong to a thread: ``ioprio_set(IOPRIO_WHO_PROCESS,
tid)`` and ``setpriority(PRIO_PROCESS, tid)`` change only the thread named.
Each stream runs in threads created for it (the stream thread, its reader or
writer), which call :func:`apply` first; they end with the stream, so nothing
has to be restored.  The CPU nice follows the kernel's own mapping of nice to
best-effort level (level = (nice + 20) / 5) and is only ever lowered: idle
gets nice 19, level 5..7 gets 5, 10, 15, levels up to 4 keep the daemon's.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from dataclasses import dataclass

from ganeti.transfer import TransferError

LOG = logging.getLogger(__name__)

BEST_EFFORT = "best-effort"
IDLE = "idle"
CLASSES = (BEST_EFFORT, IDLE)
# The kernel's level of a best-effort thread that never chose one (nice 0)
DEFAULT_LEVEL = 4

IOPRIO_CLASS_NONE = 0
IOPRIO_CLASS_RT = 1
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1
_CLASS_NUMBER = {BEST_EFFORT: IOPRIO_CLASS_BE, IDLE: IOPRIO_CLASS_IDLE}
# (ioprio_set, ioprio_get) per machine; asm-generic numbers for the newer ports
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "riscv64": (30, 31),
             "i686": (289, 290), "i386": (289, 290), "armv7l": (314, 315),
             "ppc64le": (273, 274), "s390x": (282, 283)}
_PR_SET_NAME = 15

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _syscall(index: int, *args: int) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(f"ioprio syscalls unknown on {platform.machine()}")
    result = int(_load_libc().syscall(numbers[index], *(ctypes.c_int(a) for a in args)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


@dataclass(frozen=True)
class IoPriority:
    klass: str
    level: int = DEFAULT_LEVEL

    @classmethod
    def create(cls, klass: str | None, level: int | None) -> IoPriority | None:
        """None: leave the daemon's priority; a level alone means best-effort (as ionice)."""
        if klass is None and level is None:
            return None
        klass = klass or BEST_EFFORT
        if klass not in CLASSES:
            raise TransferError(f"Invalid ionice_class {klass!r}: expected one of"
                                f" {', '.join(CLASSES)}")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)
                                  or not 0 <= level <= 7):
            raise TransferError(f"Invalid ionice_level {level!r}: expected 0..7")
        if klass == IDLE:
            return cls(IDLE, 0)  # the idle class has no levels
        return cls(klass, DEFAULT_LEVEL if level is None else level)

    @property
    def value(self) -> int:
        return (_CLASS_NUMBER[self.klass] << IOPRIO_CLASS_SHIFT) | self.level

    @property
    def nice(self) -> int:
        if self.klass == IDLE:
            return 19
        return max(0, self.level * 5 - 20)

    def __str__(self) -> str:
        return self.klass if self.klass == IDLE else f"{self.klass} level {self.level}"


def set_thread_name(name: str) -> None:
    """The kernel's name of the calling thread (``top -H``, ``ps -L``, /proc/.../comm)."""
    if platform.system() != "Linux":
        return
    try:
        _load_libc().prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def apply(prio: IoPriority | None, name: str | None = None) -> None:
    """Give the calling thread ``prio`` (and a kernel name); failures only warn."""
    if name:
        set_thread_name(name)
    if prio is None:
        return
    tid = threading.get_native_id()
    try:
        _syscall(0, IOPRIO_WHO_PROCESS, tid, prio.value)
    except OSError as err:
        LOG.warning("Cannot set the I/O priority %s of thread %d: %s", prio, tid, err)
    nice = prio.nice
    try:
        if nice > os.getpriority(os.PRIO_PROCESS, tid):
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as err:
        LOG.warning("Cannot set nice %d on thread %d: %s", nice, tid, err)


def get(tid: int) -> tuple[int, int]:
    """``(class, level)`` of a thread, class as the kernel numbers it (0: none set)."""
    value = _syscall(1, IOPRIO_WHO_PROCESS, tid)
    return value >> IOPRIO_CLASS_SHIFT, value & ((1 << IOPRIO_CLASS_SHIFT) - 1)
