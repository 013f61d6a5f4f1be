"""Liveness and node information procedures."""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path

from ganeti import constants, limits
from ganeti.backend import NodeContext, RpcFail
from ganeti.rpc import encoders
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import NodeInfo

# Upper bound for test_delay, so a typo cannot park a daemon thread for days
MAX_TEST_DELAY = float(limits.TEST_DELAY.maximum)
_MIB = 1024 * 1024


@procedure("fast")
def version(ctx: NodeContext) -> int:
    """Protocol version of each node."""
    return constants.PROTOCOL_VERSION


@procedure("fast")
def ping(ctx: NodeContext) -> bool:
    """Liveness check."""
    return True


@procedure(encoders.test_delay_timeout, encoders={"duration": encoders.seconds})
def test_delay(ctx: NodeContext, duration: float) -> None:
    """Sleep on the nodes (job engine and RPC timeout tests)."""
    if not math.isfinite(duration) or duration < 0 or duration > MAX_TEST_DELAY:
        raise RpcFail(f"Invalid delay duration {duration!r}: must be 0..{MAX_TEST_DELAY:g}")
    time.sleep(duration)


def _meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])  # kB
    return values


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@procedure("fast")
def node_info(ctx: NodeContext) -> NodeInfo:
    """Hostname, memory (MiB), CPUs and free disk (MiB, under the node's root) of each node."""
    mem = _meminfo()
    disk_root = _existing_ancestor(ctx.paths.root)
    usage = shutil.disk_usage(disk_root)
    return {
        "hostname": socket.gethostname(),
        "memory_total": mem.get("MemTotal", 0) // 1024,
        "memory_free": mem.get("MemAvailable", mem.get("MemFree", 0)) // 1024,
        "cpu_count": os.cpu_count() or 1,
        "disk_total": usage.total // _MIB,
        "disk_free": usage.free // _MIB,
        "root": str(ctx.paths.root),
    }
