"""Files the master pushes to nodes: uploaded cluster files and ssconf values."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import pathutils
from ganeti.backend import NodeContext, RpcFail, config_records
from ganeti.fileutils import atomic_write
from ganeti.rpc import encoders
from ganeti.rpc.contract import procedure

# Files the master may overwrite on a node.  Anything else (above all the
# node's own certificate and key) is refused, so a stolen master-side client
# certificate cannot be used to plant arbitrary files.
UPLOAD_ALLOWED: tuple[Callable[[pathutils.Paths], Path], ...] = (
    lambda p: p.cluster_conf_file,
    lambda p: p.cluster_ca_file,
)
SSCONF_PREFIX = "ssconf_"
_SSCONF_KEY_RE = re.compile(r"^[a-z0-9_]{1,64}$")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


@procedure("normal", prepare=encoders.upload_file)
def upload_file(ctx: NodeContext, file_name: str, data_base64: str, mode: int,
                mtime: float | None) -> int | None:
    """Copy a master-side cluster file (config, CA) to the nodes.

    Atomically written on each node, and only if it is one of the allow-listed
    cluster files (the master sends the file's root-relative name).  The
    configuration replaces the node's file and journal; payload: its serial
    (None for other files).
    """
    target = pathutils.from_wire_name(ctx.paths, file_name)
    allowed = {allowed_fn(ctx.paths) for allowed_fn in UPLOAD_ALLOWED}
    if target not in allowed:
        raise RpcFail(f"File {file_name} is not allowed to be uploaded to this node")
    if not 0 <= mode <= 0o7777:
        raise RpcFail(f"Invalid file mode {mode!r}")
    if mtime is not None and not math.isfinite(mtime):
        raise RpcFail(f"Invalid modification time {mtime!r}")
    try:
        data = base64.b64decode(data_base64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise RpcFail(f"Invalid base64 data for {file_name}: {err}") from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise RpcFail(f"File {file_name} too large ({len(data)} bytes)")
    when = None if mtime is None else float(mtime)
    if target == ctx.paths.cluster_conf_file:
        return config_records.replace_file(target, data, mode, when)
    atomic_write(target, data, mode, mtime=when)
    return None


@procedure("normal")
def append_config_records(ctx: NodeContext, base_serial: int, records: str) -> int:
    """Append the master's configuration journal records to a candidate's copy.

    ``records`` are journal lines following ``base_serial``; refused with
    "base serial mismatch: node has N, records start at M" unless the node
    holds exactly ``base_serial`` (the master then uploads the whole file).
    Payload: the node's new serial.
    """
    if len(records) > MAX_UPLOAD_BYTES:
        raise RpcFail(f"Configuration records too large ({len(records)} bytes)")
    return config_records.append_records(ctx.paths.cluster_conf_file, base_serial,
                                         records.encode("utf-8"))


def _ssconf_text(key: str, value: Any) -> str:
    """Text, numbers, or lists of them (one per line)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)):
        text = "\n".join(str(v) for v in value)
    elif isinstance(value, (int, float, bool)):
        text = str(value)
    else:
        raise RpcFail(f"Invalid value type {type(value).__name__} for ssconf key {key}")
    return text if text.endswith("\n") or not text else text + "\n"


@procedure("fast")
def write_ssconf_files(ctx: NodeContext, values: dict[str, Any]) -> None:
    """Write ssconf_<key> files on the nodes (local tools read cluster facts without RPC)."""
    prepared: dict[str, bytes] = {}
    for key, value in values.items():
        if not _SSCONF_KEY_RE.match(key):
            raise RpcFail(f"Invalid ssconf key {key!r}")
        prepared[key] = _ssconf_text(key, value).encode("utf-8")
    for key, data in sorted(prepared.items()):
        atomic_write(ctx.paths.data_dir / f"{SSCONF_PREFIX}{key}", data, 0o444)
