"""Master-side halves of RPC calls: argument encoders, prepare functions, timeouts.

Backend procedures name these in their :func:`ganeti.rpc.contract.procedure`
marks; the generated :mod:`ganeti.rpc.stubs` calls them on the master.  The
master-side type of an encoded argument is the annotation of the encoder's
parameter (of the prepare function's parameters after ``paths``), so keep
them precise.  Everything here runs on the master: never import the backend.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ganeti import pathutils
from ganeti.objects import Disk, Instance
from ganeti.rpc.calltypes import TMO_NORMAL, Base64Text


def disk(value: Disk) -> dict[str, Any]:
    """Config objects travel as their JSON form."""
    return value.to_dict()


def instance(value: Instance) -> dict[str, Any]:
    """Instances travel as their JSON form (filled parameters included)."""
    return value.to_dict()


def seconds(value: float) -> float:
    return float(value)


def string_env(env: Mapping[str, Any]) -> dict[str, str]:
    """Hook environments travel as strings (None: empty)."""
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def upload_file(paths: pathutils.Paths, file_name: str | os.PathLike[str]) -> list[Any]:
    """Read the master's file; sent with its root-relative name (every node of a local
    cluster has its own root, in production all roots are "/")."""
    path = Path(file_name)
    data = path.read_bytes()
    stat = os.stat(path)
    return [pathutils.to_wire_name(paths, path),
            Base64Text(base64.b64encode(data).decode("ascii")),
            stat.st_mode & 0o7777, stat.st_mtime]


# --- timeouts (of the master-side argument values) -------------------------------------

def test_delay_timeout(values: Mapping[str, Any]) -> float:
    return float(values["duration"]) + 5.0


def shutdown_timeout(values: Mapping[str, Any]) -> float:
    # the node may wait the whole timeout and then kill; leave room for the kill
    return float(values["shutdown_timeout"]) + TMO_NORMAL


def reboot_timeout(values: Mapping[str, Any]) -> float:
    return float(values["shutdown_timeout"]) + 2 * TMO_NORMAL
