"""Declarative table of node RPC calls made by the master.

Each entry names the node daemon procedure, a timeout class, the arguments
(with optional encoders turning master-side values into wire values) and
whether it targets one node or many.  :class:`ganeti.rpc.client.RpcRunner`
turns every entry ``NAME`` into a method ``call_NAME``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ganeti import pathutils
from ganeti.rpc import calls_export, calls_instance, calls_transfer, calls_x509
from ganeti.rpc.calltypes import (  # noqa: F401 - re-exported for callers
    TIMEOUT_CLASSES,
    TIMEOUT_KW,
    TMO_1DAY,
    TMO_4HRS,
    TMO_FAST,
    TMO_NORMAL,
    TMO_SLOW,
    TMO_URGENT,
    Arg,
    PrepareFn,
    RpcCall,
    TimeoutFn,
)


def _test_delay_timeout(values: Mapping[str, Any]) -> float:
    return float(values["duration"]) + 5.0


def _string_env(env: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _prepare_upload(paths: pathutils.Paths, values: Mapping[str, Any]) -> list[Any]:
    # Sent as a root-relative name: on a local cluster every node has its own
    # root, in production all roots are "/" and the name is the real path.
    from ganeti.backend.files import to_wire_name

    path = Path(values["file_name"])
    data = path.read_bytes()
    stat = os.stat(path)
    return [to_wire_name(paths, path), base64.b64encode(data).decode("ascii"),
            stat.st_mode & 0o7777, stat.st_mtime]


_CALL_LIST = (
    RpcCall("version", "version", "fast", doc="Protocol version of each node"),
    RpcCall("ping", "ping", "fast", doc="Liveness check"),
    RpcCall("node_info", "node_info", "fast",
            doc="Hostname, memory, CPUs and free disk of each node"),
    RpcCall("test_delay", "test_delay", _test_delay_timeout, (Arg("duration", float),),
            doc="Sleep on the nodes (job engine tests)"),
    RpcCall("upload_file", "upload_file", "normal", (Arg("file_name"),),
            prepare=_prepare_upload,
            doc="Copy a master-side cluster file (config, CA) to the nodes"),
    RpcCall("write_ssconf_files", "write_ssconf_files", "fast", (Arg("values", dict),),
            doc="Write ssconf_<key> files on the nodes"),
    RpcCall("hooks_runner", "hooks_runner", "slow",
            (Arg("hpath"), Arg("phase"), Arg("env", _string_env)),
            doc="Run hook scripts; payload is [(script, status, output), ...]"),
)


def _check(calls: tuple[RpcCall, ...]) -> Mapping[str, RpcCall]:
    table: dict[str, RpcCall] = {}
    for call in calls:
        if call.name in table:
            raise ValueError(f"Duplicate RPC call {call.name}")
        if any(arg.name == TIMEOUT_KW for arg in call.args):
            raise ValueError(f"RPC call {call.name}: argument name {TIMEOUT_KW} is reserved")
        if isinstance(call.timeout, str) and call.timeout not in TIMEOUT_CLASSES:
            raise ValueError(f"RPC call {call.name}: unknown timeout class {call.timeout}")
        table[call.name] = call
    return MappingProxyType(table)


# Each area keeps its calls in lib/rpc/calls_<area>.py (a CALLS tuple) and is listed here.
_AREA_CALLS: tuple[RpcCall, ...] = (*calls_instance.CALLS, *calls_transfer.CALLS,
                                     *calls_export.CALLS, *calls_x509.CALLS)

CALLS: Mapping[str, RpcCall] = _check((*_CALL_LIST, *_AREA_CALLS))
