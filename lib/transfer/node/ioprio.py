"""I/O and CPU priority of the node daemon threads that copy export data.

The copy runs in threads of the node daemon, so a unit file's ``Nice=`` or
``IOSchedulingClass=`` would slow the whole daemon, not just the copy.  On
Linux both priorities belong to a thread: ``ioprio_set(IOPRIO_WHO_PROCESS,
tid)`` and ``setpriority(PRIO_PROCESS, tid)`` change only the thread named.
Each stream runs in threads created for it (the stream thread, its reader or
writer), which call :func:`apply` first; they end with the stream, so nothing
has to be restored.  What a priority means (its kernel value and nice) is
:class:`ganeti.transfer.priority.IoPriority`, shared with the master.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

from ganeti.transfer.priority import IOPRIO_CLASS_SHIFT, IoPriority

# IoPriority is part of this module's interface: what apply() takes
__all__ = ["IoPriority", "apply", "get", "set_thread_name"]

LOG = logging.getLogger(__name__)

# (ioprio_set, ioprio_get) per machine; asm-generic numbers for the newer ports
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "riscv64": (30, 31),
             "i686": (289, 290), "i386": (289, 290), "armv7l": (314, 315),
             "ppc64le": (273, 274), "s390x": (282, 283)}
_PR_SET_NAME = 15
IOPRIO_WHO_PROCESS = 1

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
