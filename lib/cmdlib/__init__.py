"""Logical units, one module per area; this module maps opcodes to them.

The LU for ``OpFooBar`` is the class ``LUFooBar`` in one of ``LU_MODULES``.
"""

from __future__ import annotations

import importlib
from functools import cache

from ganeti import errors
from ganeti.cmdlib.base import LogicalUnit

# the modules holding LUs (a new area's module is listed here)
LU_MODULES: tuple[str, ...] = (
    "ganeti.cmdlib.test",
    "ganeti.cmdlib.cluster",
    "ganeti.cmdlib.node",
    "ganeti.cmdlib.instance",
    "ganeti.cmdlib.query",
    "ganeti.cmdlib.backup",
    "ganeti.cmdlib.backup_schedule",
    "ganeti.cmdlib.backup_verify",
    "ganeti.cmdlib.maintenance",
    "ganeti.cmdlib.tags",
)


@cache
def _lu_table() -> dict[str, type[LogicalUnit]]:
    table: dict[str, type[LogicalUnit]] = {}
    for module_name in LU_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if (name.startswith("LU") and isinstance(obj, type)
                    and issubclass(obj, LogicalUnit) and obj.__module__ == module_name):
                table[name] = obj
    return table


def get_lu_class(op_class_name: str) -> type[LogicalUnit]:
    """The LU implementing the opcode class ``op_class_name`` (e.g. OpTestDelay)."""
    lu_name = "LU" + op_class_name.removeprefix("Op")
    try:
        return _lu_table()[lu_name]
    except KeyError:
        raise errors.OpCodeUnknown(f"No logical unit implements {op_class_name}") from None
