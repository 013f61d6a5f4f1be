"""Disk transfer engine: one TLS stream per disk, node to node.

The receiving node listens, the sending node connects; both verify the peer
against a CA given by the caller (the cluster CA for local exports).  The
stream carries only the data regions of a disk, so sparse images stay sparse
and cost no bandwidth for their holes.

Two sides that never import each other, and what they share:

* :mod:`ganeti.transfer.master` runs in masterd and drives node RPCs:
  ``coordinator`` (both ends in this cluster), ``oneside`` (one end, for
  inter-cluster moves) and ``policy`` (bandwidth limits and I/O priority);
* :mod:`ganeti.transfer.node` runs in noded: ``registry`` (the daemon's
  table of streams), ``sender``/``receiver`` (one stream each) and
  ``ioprio`` (thread priorities);
* shared here: this module's constants and errors, ``protocol`` (framing),
  ``checksum`` (layout-independent disk checksum), ``priority`` (the I/O
  priority value both sides check) and ``ratelimit`` (token buckets).
"""

from __future__ import annotations

from ganeti import errors

# Data frames never cross a checksum block, so block size = largest frame
BLOCK_SIZE = 4 * 1024 * 1024

COMPRESS_NONE = "none"
COMPRESS_ZSTD = "zstd"
COMPRESS_GZIP = "gzip"
COMPRESSIONS = frozenset({COMPRESS_NONE, COMPRESS_ZSTD, COMPRESS_GZIP})
DEFAULT_COMPRESS_LEVEL = 3

DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_LISTEN_TIMEOUT = 120.0
DEFAULT_PROGRESS_TIMEOUT = 60.0


class TransferError(errors.GenericError):
    """A stream failed; the message says why, for the operator."""


class TransferAborted(TransferError):
    """The transfer was aborted locally (by the master or the daemon)."""


__all__ = [
    "BLOCK_SIZE",
    "COMPRESSIONS",
    "COMPRESS_GZIP",
    "COMPRESS_NONE",
    "COMPRESS_ZSTD",
    "DEFAULT_COMPRESS_LEVEL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LISTEN_TIMEOUT",
    "DEFAULT_PROGRESS_TIMEOUT",
    "TransferAborted",
    "TransferError",
]
