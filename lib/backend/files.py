"""Files the master pushes to nodes: uploaded cluster files and ssconf values."""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.fileutils import atomic_write

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


def to_wire_name(paths: pathutils.Paths, path: str | os.PathLike[str]) -> str:
    """The root-relative name of a local file, as nodes with other roots know it."""
    local = Path(os.path.normpath(os.path.abspath(path)))
    try:
        rel = local.relative_to(paths.root)
    except ValueError:
        raise RpcFail(f"File {local} is outside the cluster root {paths.root}") from None
    return "/" + rel.as_posix()


def _node_path(paths: pathutils.Paths, file_name: str) -> Path:
    if not isinstance(file_name, str) or not file_name.startswith("/"):
        raise RpcFail(f"Invalid file name {file_name!r}: must be an absolute path")
    normalized = os.path.normpath(file_name)
    return Path(os.path.normpath(paths.root / normalized.lstrip("/")))


def upload_file(ctx: NodeContext, file_name: str, data_base64: str, mode: int,
                mtime: float | None) -> None:
    """Atomically write one of the allow-listed cluster files on this node."""
    target = _node_path(ctx.paths, file_name)
    allowed = {allowed_fn(ctx.paths) for allowed_fn in UPLOAD_ALLOWED}
    if target not in allowed:
        raise RpcFail(f"File {file_name} is not allowed to be uploaded to this node")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise RpcFail(f"Invalid file mode {mode!r}")
    if mtime is not None and (isinstance(mtime, bool) or not isinstance(mtime, (int, float))
                              or not math.isfinite(mtime)):
        raise RpcFail(f"Invalid modification time {mtime!r}")
    if not isinstance(data_base64, str):
        raise RpcFail("File data must be a base64 string")
    try:
        data = base64.b64decode(data_base64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise RpcFail(f"Invalid base64 data for {file_name}: {err}") from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise RpcFail(f"File {file_name} too large ({len(data)} bytes)")
    atomic_write(target, data, mode, mtime=None if mtime is None else float(mtime))


def _ssconf_text(key: str, value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)):
        text = "\n".join(str(v) for v in value)
    elif isinstance(value, (int, float, bool)):
        text = str(value)
    else:
        raise RpcFail(f"Invalid value type {type(value).__name__} for ssconf key {key}")
    return text if text.endswith("\n") or not text else text + "\n"


def write_ssconf_files(ctx: NodeContext, values: dict[str, Any]) -> None:
    """Write ``ssconf_<key>`` files so local tools can read cluster facts without RPC."""
    if not isinstance(values, dict):
        raise RpcFail("ssconf values must be a dictionary")
    prepared: dict[str, bytes] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not _SSCONF_KEY_RE.match(key):
            raise RpcFail(f"Invalid ssconf key {key!r}")
        prepared[key] = _ssconf_text(key, value).encode("utf-8")
    for key, data in sorted(prepared.items()):
        atomic_write(ctx.paths.data_dir / f"{SSCONF_PREFIX}{key}", data, 0o444)
