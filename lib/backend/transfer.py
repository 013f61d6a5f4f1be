"""Node-side procedures of the disk transfer engine (see :mod:`ganeti.transfer`).

File paths arrive root-relative (as in ``files.upload_file``) and must stay
inside the node's export or file storage directory, after resolving symlinks;
disks are opened through their storage driver.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ganeti import crypto, errors, storage
from ganeti.backend import NodeContext, RpcFail, x509
from ganeti.backup.blockindex import index_path
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import ReceiveEndpoint
from ganeti.storage.extents import DiskReader, DiskWriter
from ganeti.transfer import COMPRESSIONS, TransferError
from ganeti.transfer.checksum import ALGORITHMS
from ganeti.transfer.node import registry
from ganeti.transfer.node.receiver import FileOutput
from ganeti.transfer.node.sender import ChangeSource
from ganeti.transfer.priority import IoPriority

_TIMEOUT_KEYS = ("connect_timeout", "listen_timeout", "progress_timeout")


def _allowed_roots(ctx: NodeContext) -> list[Path]:
    return [Path(os.path.realpath(ctx.paths.export_dir)),
            Path(os.path.realpath(ctx.paths.file_storage_dir))]


def resolve_file(ctx: NodeContext, name: Any, create_parents: bool = False) -> Path:
    """The local path of a root-relative file name, refused outside the allowed dirs."""
    if not isinstance(name, str) or not name.startswith("/") or "\x00" in name:
        raise RpcFail(f"Invalid file name {name!r}: must be an absolute path")
    if ".." in Path(name).parts:
        raise RpcFail(f"Invalid file name {name!r}: '..' is not allowed")
    local = ctx.paths.root / name.lstrip("/")
    roots = _allowed_roots(ctx)
    parent = Path(os.path.realpath(local.parent))
    if not any(parent == root or parent.is_relative_to(root) for root in roots):
        raise RpcFail(f"File {name} is outside the export and file storage directories")
    if create_parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RpcFail(f"Cannot create directory {parent}: {err}") from None
    target = parent / local.name
    if target.is_symlink():
        raise RpcFail(f"File {name} is a symbolic link")
    return target


def _ssl_context(ctx: NodeContext, options: Mapping[str, Any], server: bool) -> ssl.SSLContext:
    """Cluster certificates unless the master names others (remote exports)."""
    if options.get("x509_key_name") is not None:
        # remote export: this node's per-transfer key, trusting only the peer's
        return x509.transfer_ssl_context(ctx, options, server)
    cert = options.get("cert_file") or ctx.paths.node_cert_file
    ca = options.get("ca_file") or ctx.paths.cluster_ca_file
    make = crypto.server_ssl_context if server else crypto.client_ssl_context
    try:
        return make(cert, ca)
    except errors.X509CertError as err:
        raise RpcFail(str(err)) from None


def _stream_options(options: Mapping[str, Any]) -> registry.StreamOptions:
    values: dict[str, Any] = {}
    for key in _TIMEOUT_KEYS:
        if options.get(key) is not None:
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise RpcFail(f"Invalid {key} {value!r}")
            values[key] = float(value)
    level = options.get("compress_level")
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, int) or not -5 <= level <= 22:
            raise RpcFail(f"Invalid compress_level {level!r}")
        values["compress_level"] = level
    checksum = options.get("checksum")
    if checksum is not None:
        if checksum not in ALGORITHMS:
            raise RpcFail(f"Invalid checksum {checksum!r}: expected one of"
                          f" {', '.join(sorted(ALGORITHMS))}")
        values["checksum"] = checksum
    for key in ("verify_receive", "incremental"):
        flag = options.get(key)
        if flag is not None:
            if not isinstance(flag, bool):
                raise RpcFail(f"Invalid {key} {flag!r}: expected true or false")
            values[key] = flag
    values.update(_limit_options(options))
    return registry.StreamOptions(**values)


def _kib_per_s(options: Mapping[str, Any], key: str) -> int:
    value = options.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RpcFail(f"Invalid {key} {value!r}: expected KiB/s, 0 or more")
    return value


def _limit_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Bandwidth limits and I/O priority; an absent node_bwlimit: not counted here."""
    values: dict[str, Any] = {"bwlimit": _kib_per_s(options, "bwlimit")}
    group = options.get("bwlimit_group")
    if group is not None:
        if not isinstance(group, str) or not 1 <= len(group) <= 128:
            raise RpcFail(f"Invalid bwlimit_group {group!r}")
        values["bwlimit_group"] = group
    if "node_bwlimit" in options:
        values["node_bwlimit"] = _kib_per_s(options, "node_bwlimit")
    try:
        values["io_priority"] = IoPriority.create(options.get("ionice_class"),
                                                  options.get("ionice_level"))
    except TransferError as err:
        raise RpcFail(str(err)) from None
    return values


def _check_common(transfer_id: str, magic: str, compress: str) -> None:
    try:
        registry.check_id(transfer_id)
    except TransferError as err:
        raise RpcFail(str(err)) from None
    if not 8 <= len(magic) <= 256:
        raise RpcFail("Invalid stream magic: expected a string of 8..256 characters")
    if compress not in COMPRESSIONS:
        raise RpcFail(f"Unsupported compression {compress!r}")


def _disk_spec(spec: Mapping[str, Any]) -> tuple[str, list[Any]]:
    dev_type, logical_id = spec.get("dev_type"), spec.get("logical_id")
    if not isinstance(dev_type, str) or not isinstance(logical_id, list):
        raise RpcFail(f"Invalid disk specification {dict(spec)!r}")
    return dev_type, logical_id


_GENERATION_MAX = 128


def _writer_for(ctx: NodeContext, dest: Mapping[str, Any]) -> tuple[
        Callable[[int], DiskWriter], Callable[[], None] | None, str, FileOutput | None]:
    kind = dest.get("kind")
    if kind == "file":
        path = resolve_file(ctx, dest.get("path"), create_parents=True)
        if path.exists() and not path.is_file():
            raise RpcFail(f"Destination {dest.get('path')} is not a regular file")
        output = FileOutput(path, *_base_of(ctx, dest, path))
        index = index_path(path)

        def remove() -> None:
            # the index first: a dump without one is never mistaken for a base
            for leftover in (index, path):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

        return ((lambda size: DiskWriter.create(path, size)), remove,
                str(dest.get("path")), output)
    if kind == "disk":
        dev_type, logical_id = _disk_spec(dest)
        driver = _driver(ctx, dev_type)
        return ((lambda _size: driver.open_writer(logical_id)), None, f"{dev_type} disk",
                None)
    raise RpcFail(f"Unknown destination kind {kind!r}")


def _base_of(ctx: NodeContext, dest: Mapping[str, Any], path: Path
             ) -> tuple[Path | None, str | None]:
    """The dest spec's base dump (checked like its path) and base generation."""
    name, generation = dest.get("base"), dest.get("base_generation")
    if generation is not None and (not isinstance(generation, str)
                                   or not 0 < len(generation) <= _GENERATION_MAX
                                   or "/" in generation or "\x00" in generation):
        raise RpcFail(f"Invalid base_generation {generation!r}")
    if name is None:
        return None, generation
    base = resolve_file(ctx, name)
    if base == path:
        raise RpcFail(f"Base {name} is the destination itself")
    if base.exists() and not base.is_file():
        raise RpcFail(f"Base {name} is not a regular file")
    return base, generation


class _DriverChanges:
    """The changed ranges of a disk snapshot since its disk's export base (extents mode)."""

    def __init__(self, driver: storage.DiskDriver, origin: list[Any],
                 source: list[Any]) -> None:
        self._driver = driver
        self._origin = origin
        self._source = source

    def changed_ranges(self, base_checksum: str) -> list[tuple[int, int]] | None:
        found = self._driver.export_base(self._origin)
        if found is None:
            return None
        base, record = found
        # a base made for another target or an older generation is never trusted
        if record.get("checksum") != base_checksum:
            return None
        return self._driver.changed_ranges(base, self._source)


def _reader_for(ctx: NodeContext, source: Mapping[str, Any]
                ) -> tuple[Callable[[], DiskReader], str, ChangeSource | None]:
    kind = source.get("kind")
    if kind == "file":
        path = resolve_file(ctx, source.get("path"))
        if not path.is_file():
            raise RpcFail(f"Source {source.get('path')} is not a regular file")
        return (lambda: DiskReader(path)), str(source.get("path")), None
    if kind == "disk":
        dev_type, logical_id = _disk_spec(source)
        driver = _driver(ctx, dev_type)
        changes = None
        origin = source.get("origin")
        if origin is not None:
            if not isinstance(origin, list):
                raise RpcFail(f"Invalid origin {origin!r}: expected a disk logical id")
            changes = _DriverChanges(driver, origin, logical_id)
        return (lambda: driver.open_reader(logical_id)), f"{dev_type} disk", changes
    raise RpcFail(f"Unknown source kind {kind!r}")


def _driver(ctx: NodeContext, dev_type: str) -> storage.DiskDriver:
    try:
        return storage.get_driver(dev_type, ctx.paths)
    except errors.StorageError as err:
        raise RpcFail(str(err)) from None


def _port_range(options: Mapping[str, Any]) -> tuple[int, int] | None:
    value = options.get("port_range")
    if value is None:
        return None
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(p, int) and 0 < p < 65536 for p in value)
            or value[0] > value[1]):
        raise RpcFail(f"Invalid port range {value!r}")
    return int(value[0]), int(value[1])


@procedure("fast", single_node=True)
def transfer_receive_start(ctx: NodeContext, transfer_id: str, dest: dict[str, Any],
                           size: int | None, magic: str, compress: str,
                           options: dict[str, Any]) -> ReceiveEndpoint:
    """Listen for one disk stream into dest; payload {host, port} for the sender."""
    _check_common(transfer_id, magic, compress)
    stream_options = _stream_options(options)
    if size is not None and size < 0:
        raise RpcFail(f"Invalid size {size!r}")
    address = options.get("bind") or "0.0.0.0"
    if not isinstance(address, str):
        raise RpcFail(f"Invalid bind address {address!r}")
    open_writer, remove, label, output = _writer_for(ctx, dest)
    ssl_ctx = _ssl_context(ctx, options, server=True)
    try:
        transfer = registry.start_receive(
            transfer_id, label, address, ssl_ctx, magic, size, open_writer, remove,
            stream_options, port_range=_port_range(options), output=output)
    except TransferError as err:
        raise RpcFail(str(err)) from None
    assert transfer.port is not None  # a receiver listens
    return {"host": options.get("host") or address, "port": transfer.port}


@procedure("fast", single_node=True)
def transfer_send_start(ctx: NodeContext, transfer_id: str, source: dict[str, Any],
                        host: str, port: int, magic: str, compress: str,
                        options: dict[str, Any]) -> bool:
    """Connect to a receiver and stream one disk (in a thread of the node daemon)."""
    _check_common(transfer_id, magic, compress)
    stream_options = _stream_options(options)
    if not host:
        raise RpcFail(f"Invalid receiver host {host!r}")
    if not 0 < port < 65536:
        raise RpcFail(f"Invalid receiver port {port!r}")
    open_reader, label, changes = _reader_for(ctx, source)
    ssl_ctx = _ssl_context(ctx, options, server=False)
    try:
        registry.start_send(transfer_id, label, host, port, ssl_ctx, magic, open_reader,
                            compress, stream_options, changes=changes)
    except TransferError as err:
        raise RpcFail(str(err)) from None
    return True


@procedure("fast")
def transfer_status(ctx: NodeContext, transfer_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Progress of transfers; payload {id: status} for the ids the node knows."""
    return registry.status(transfer_ids)


@procedure("fast")
def transfer_abort(ctx: NodeContext, transfer_ids: list[str]) -> list[str]:
    """Abort running transfers."""
    return registry.abort(transfer_ids)


@procedure("normal")
def transfer_cleanup(ctx: NodeContext, transfer_ids: list[str]) -> list[str]:
    """Forget transfers (aborting live ones); failed receivers remove their partial output."""
    return registry.cleanup(transfer_ids)


@procedure("fast")
def transfer_list(ctx: NodeContext) -> dict[str, dict[str, Any]]:
    """All transfers a node remembers (leftovers of crashed masters)."""
    return registry.list_transfers()
