"""I/O priority of a transfer's copy threads, as both sides name it.

The master resolves and checks the opcode's ``ionice_class``/``ionice_level``
(:mod:`ganeti.transfer.master.policy`), the node daemon checks them again at
its RPC boundary and applies them to its copy threads
(:mod:`ganeti.transfer.node.ioprio`); both use this one value type.  The CPU
nice follows the kernel's own mapping of nice to best-effort level (level =
(nice + 20) / 5) and is only ever lowered: idle gets nice 19, level 5..7 gets
5, 10, 15, levels up to 4 keep the daemon's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganeti.transfer import TransferError

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
_CLASS_NUMBER = {BEST_EFFORT: IOPRIO_CLASS_BE, IDLE: IOPRIO_CLASS_IDLE}

@dataclass(frozen=True)
class IoPriority:
    """A class and level as ionice(1) names them; ``value`` is the kernel's encoding."""

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
