"""Stream framing: a typed, length-prefixed frame per message.

Every frame is ``type (1 byte) | payload length (4 bytes, big endian) |
payload``.  Control frames carry a JSON object; DATA frames carry
``offset (8) | raw length (4) | encoding (1) | body``.  A stream is::

    sender   HEADER ------------------>  receiver checks magic, version, size
             <------------------ READY   (or ERROR, before any byte is written);
             <------------- BASE ... BASE   the base dump's block digests, if any
             DATA ... DATA --------------->  changed data (all of it without a base)
             BLOCKS ... BLOCKS END ------->  every block digest, byte counts, checksum
             <-------------------- ACK   receiver's own checksum, or null

The sender always hashes what it reads (that checksum is what an export
records).  The receiver checks the byte counts and hashes the received data
only when asked to (``verify``): TLS already protects the bytes in transit.
Either side may send ERROR at any point; the other side then fails too.
"""

from __future__ import annotations

import hmac
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from ganeti import errors, serializer
from ganeti.transfer import (
    BLOCK_SIZE,
    COMPRESS_GZIP,
    COMPRESS_NONE,
    COMPRESS_ZSTD,
    COMPRESSIONS,
    TransferError,
)
from ganeti.transfer.checksum import ALGORITHMS, DEFAULT_ALGORITHM

# 2: the header names the checksum algorithm, END carries sent_bytes and the
# receiver's ACK checksum may be null (not verified)
# 3: incremental streams: READY names a base, BASE and BLOCKS frames carry block
# digests, ZERO data frames punch holes
PROTOCOL_VERSION = 3

HEADER = 1
READY = 2
DATA = 3
END = 4
ACK = 5
ERROR = 6
BASE = 7
BLOCKS = 8
# receiver -> sender before READY while the base dump is being copied: the
# receiver is alive (each arrives well within the progress timeout)
WAIT = 9
FRAME_NAMES = {HEADER: "HEADER", READY: "READY", DATA: "DATA", END: "END", ACK: "ACK",
               ERROR: "ERROR", BASE: "BASE", BLOCKS: "BLOCKS", WAIT: "WAIT"}

FRAME_HEAD = struct.Struct("!BI")
DATA_HEAD = struct.Struct("!QIB")
# Frame head plus data head, written in front of a data block in one buffer
DATA_PREFIX = FRAME_HEAD.size + DATA_HEAD.size
MAX_PAYLOAD = DATA_HEAD.size + BLOCK_SIZE
MAX_JSON_PAYLOAD = 64 * 1024
DIGEST_SIZE = 32
# Block digests per BASE/BLOCKS frame (4 MiB of payload: 512 GiB of disk)
DIGESTS_PER_FRAME = 131072

ENC_RAW = 0
ENC_ZSTD = 1
ENC_ZLIB = 2
# No body: the range reads as zeros (the receiver punches a hole)
ENC_ZERO = 3
_ZEROS = memoryview(bytes(BLOCK_SIZE))
_ENCODING_OF = {COMPRESS_NONE: ENC_RAW, COMPRESS_ZSTD: ENC_ZSTD, COMPRESS_GZIP: ENC_ZLIB}


class ProtocolError(TransferError):
    """The peer sent something that is not a valid frame sequence."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection at a frame boundary."""


class PeerError(TransferError):
    """The peer reported a failure with an ERROR frame."""


def encode_frame(ftype: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"Frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return FRAME_HEAD.pack(ftype, len(payload)) + payload


def encode_json(ftype: int, obj: dict[str, Any]) -> bytes:
    return encode_frame(ftype, json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def pack_data_prefix(buf: bytearray | memoryview, offset: int, raw_len: int, encoding: int,
                     body_len: int) -> None:
    """Write the frame and data heads into ``buf[:DATA_PREFIX]`` (no copy of the body)."""
    FRAME_HEAD.pack_into(buf, 0, DATA, DATA_HEAD.size + body_len)
    DATA_HEAD.pack_into(buf, FRAME_HEAD.size, offset, raw_len, encoding)


def data_prefix(offset: int, raw_len: int, encoding: int, body_len: int) -> bytes:
    buf = bytearray(DATA_PREFIX)
    pack_data_prefix(buf, offset, raw_len, encoding, body_len)
    return bytes(buf)


def decode_json(payload: memoryview | bytes) -> dict[str, Any]:
    if len(payload) > MAX_JSON_PAYLOAD:
        raise ProtocolError(f"Control frame of {len(payload)} bytes is too large")
    try:
        obj = serializer.load_json(bytes(payload), "control frame")
    except errors.ParseError as err:
        # e.g. 64 KiB of "[": a RecursionError before the strict decoder
        raise ProtocolError(f"Malformed control frame: {err.args[0]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("Malformed control frame: not a JSON object")
    return obj


def decode_data(payload: memoryview) -> tuple[int, int, int, memoryview]:
    """``(offset, raw length, encoding, body)`` of a DATA payload."""
    if len(payload) < DATA_HEAD.size:
        raise ProtocolError(f"DATA frame of {len(payload)} bytes is too short")
    offset, raw_len, encoding = DATA_HEAD.unpack_from(payload)
    return offset, raw_len, encoding, payload[DATA_HEAD.size:]


RecvInto = Callable[[memoryview], int]


class FrameReader:
    """Reads frames into one reusable buffer (the payload view is valid until the next read)."""

    def __init__(self, recv_into: RecvInto, max_payload: int = MAX_PAYLOAD) -> None:
        self._recv_into = recv_into
        self._max_payload = max_payload
        self._buf = bytearray(max(max_payload, FRAME_HEAD.size))
        self._view = memoryview(self._buf)

    def _fill(self, view: memoryview, at_boundary: bool) -> None:
        got = 0
        while got < len(view):
            n = self._recv_into(view[got:])
            if n == 0:
                if at_boundary and got == 0:
                    raise ConnectionClosed("Connection closed by the peer")
                raise ProtocolError("Connection closed in the middle of a frame")
            got += n

    def read(self, into: memoryview | None = None) -> tuple[int, memoryview]:
        """Next frame; the payload goes to ``into`` (at least ``max_payload`` long) if given."""
        head = self._view[:FRAME_HEAD.size]
        self._fill(head, at_boundary=True)
        ftype, length = FRAME_HEAD.unpack(head)
        if ftype not in FRAME_NAMES:
            raise ProtocolError(f"Unknown frame type {ftype}")
        if length > self._max_payload:
            raise ProtocolError(
                f"{FRAME_NAMES[ftype]} frame of {length} bytes exceeds the limit of"
                f" {self._max_payload}")
        payload = (self._view if into is None else into)[:length]
        self._fill(payload, at_boundary=False)
        return ftype, payload

    def expect(self, *ftypes: int, into: memoryview | None = None) -> tuple[int, memoryview]:
        """The next frame, which must be one of ``ftypes``; ERROR raises :class:`PeerError`."""
        ftype, payload = self.read(into)
        if ftype == ERROR and ERROR not in ftypes:
            raise PeerError(error_message(payload))
        if ftype not in ftypes:
            wanted = " or ".join(FRAME_NAMES[t] for t in ftypes)
            raise ProtocolError(f"Expected {wanted}, got {FRAME_NAMES[ftype]}")
        return ftype, payload


def error_message(payload: memoryview | bytes) -> str:
    try:
        message = decode_json(payload).get("message")
    except ProtocolError:
        message = None
    return str(message) if message else "unspecified error"


def make_header(magic: str, size: int, data_total: int, compress: str,
                checksum: str = DEFAULT_ALGORITHM, incremental: bool = False
                ) -> dict[str, Any]:
    return {"magic": magic, "version": PROTOCOL_VERSION, "size": size,
            "data_total": data_total, "compress": compress, "checksum": checksum,
            "incremental": incremental}


def check_header(header: dict[str, Any], magic: str, size: int | None) -> None:
    """Validate a HEADER before anything is written; raises ProtocolError with the reason."""
    version = header.get("version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"Unsupported protocol version {version!r}"
                            f" (this node speaks {PROTOCOL_VERSION})")
    theirs = header.get("magic")
    if not isinstance(theirs, str) or not hmac.compare_digest(
            theirs.encode("utf-8"), magic.encode("utf-8")):
        raise ProtocolError("Wrong stream magic: this stream belongs to another transfer")
    their_size = header.get("size")
    if isinstance(their_size, bool) or not isinstance(their_size, int) or their_size < 0:
        raise ProtocolError(f"Invalid disk size {their_size!r} in stream header")
    if size is not None and their_size != size:
        raise ProtocolError(f"Sender has {their_size} bytes, receiver expects {size}")
    if header.get("compress") not in COMPRESSIONS:
        raise ProtocolError(f"Unsupported compression {header.get('compress')!r}")
    if header.get("checksum") not in ALGORITHMS:
        raise ProtocolError(f"Unsupported checksum algorithm {header.get('checksum')!r}")
    if not isinstance(header.get("incremental", False), bool):
        raise ProtocolError(f"Invalid incremental flag {header.get('incremental')!r}"
                            " in stream header")


def digest_frames(ftype: int, digests: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """BASE or BLOCKS frames carrying ``digests`` (consecutive, block 0 first)."""
    view = memoryview(digests).cast("B")
    step = DIGESTS_PER_FRAME * DIGEST_SIZE
    for start in range(0, len(view), step):
        yield encode_frame(ftype, view[start:start + step].tobytes())


def add_digests(into: bytearray, payload: memoryview | bytes, expected: int,
                name: str) -> None:
    """Append one BASE/BLOCKS payload to ``into``; refuses a ragged or surplus frame."""
    if not payload or len(payload) % DIGEST_SIZE or \
            len(payload) > DIGESTS_PER_FRAME * DIGEST_SIZE:
        raise ProtocolError(f"{name} frame of {len(payload)} bytes is not 1 to"
                            f" {DIGESTS_PER_FRAME} digests")
    if len(into) + len(payload) > expected * DIGEST_SIZE:
        raise ProtocolError(f"{name} frames carry more than the {expected} block digests"
                            " of the disk")
    into += payload


def parse_ready(ready: dict[str, Any]) -> dict[str, Any] | None:
    """The base a READY announces (``generation``, ``checksum``, ``blocks``), or None."""
    base = ready.get("base")
    if base is None:
        return None
    if not isinstance(base, dict):
        raise ProtocolError(f"READY frame: invalid base {base!r}")
    generation, checksum, blocks = base.get("generation"), base.get("checksum"), \
        base.get("blocks")
    if generation is not None and not isinstance(generation, str):
        raise ProtocolError(f"READY frame: invalid base generation {generation!r}")
    if not isinstance(checksum, str):
        raise ProtocolError(f"READY frame: invalid base checksum {checksum!r}")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ProtocolError(f"READY frame: invalid base block count {blocks!r}")
    return {"generation": generation, "checksum": checksum, "blocks": blocks}


def encoding_for(compress: str) -> int:
    try:
        return _ENCODING_OF[compress]
    except KeyError:
        raise TransferError(f"Unsupported compression {compress!r}") from None


class Codec:
    """Per-frame compression; a block that does not shrink is sent raw."""

    def __init__(self, compress: str, level: int) -> None:
        self.encoding = encoding_for(compress)
        self._level = level
        self._zc: Any = None
        self._zd: Any = None
        if self.encoding == ENC_ZSTD:
            import zstandard

            self._zc = zstandard.ZstdCompressor(level=level)

    def compress(self, data: memoryview) -> tuple[int, bytes | memoryview]:
        if self.encoding == ENC_RAW:
            return ENC_RAW, data
        if self.encoding == ENC_ZSTD:
            body = self._zc.compress(data)
        else:
            body = zlib.compress(data, max(1, min(9, self._level)))
        if len(body) >= len(data):
            return ENC_RAW, data
        return self.encoding, body

    def decompress(self, encoding: int, body: memoryview, raw_len: int) -> bytes | memoryview:
        """The raw bytes of a DATA body; refuses anything but exactly ``raw_len`` bytes."""
        try:
            if encoding == ENC_ZERO:
                if body:
                    raise ProtocolError("ZERO data frame has a body")
                return _ZEROS[:raw_len]
            if encoding == ENC_RAW:
                data: bytes | memoryview = body
            elif encoding == ENC_ZSTD:
                if self._zd is None:
                    import zstandard

                    self._zd = zstandard.ZstdDecompressor()
                data = self._zd.decompress(body, max_output_size=raw_len)
            elif encoding == ENC_ZLIB:
                dec = zlib.decompressobj()
                data = dec.decompress(body, raw_len)
                if dec.unconsumed_tail or not dec.eof:
                    raise ProtocolError("zlib body does not match its raw length")
            else:
                raise ProtocolError(f"Unknown data encoding {encoding}")
        except ProtocolError:
            raise
        except Exception as err:  # zstd and zlib raise their own error types
            raise ProtocolError(f"Cannot decompress data frame: {err}") from None
        if len(data) != raw_len:
            raise ProtocolError(f"Data frame has {len(data)} bytes, header says {raw_len}")
        return data


def peer_failure(peer: str, message: str) -> str:
    """``"<Peer> failed: <message>"``, said once even if the peer already said it.

    ERROR frames carry the bare reason; the side that reads one names the
    peer.  Older peers prefixed their own role, so a prefix already there is
    kept as is rather than doubled.
    """
    prefix = f"{peer} failed: "
    if message.startswith(prefix):
        return message
    if message.startswith(f"{peer}: "):
        message = message[len(peer) + 2:]
    return prefix + message


def send_error(sock: Any, message: str, timeout: float = 2.0) -> None:
    """Best effort: tell the peer why we stop (the bare reason; it may already be gone)."""
    try:
        sock.settimeout(timeout)
        sock.sendall(encode_json(ERROR, {"message": message[:4000]}))
    except (OSError, ValueError):
        pass


def describe_io_error(err: BaseException, peer: str, progress_timeout: float) -> str:
    """An operator-readable reason for a socket failure."""
    if isinstance(err, TimeoutError):
        return f"No progress from the {peer} for {progress_timeout:g}s"
    if isinstance(err, ConnectionResetError | BrokenPipeError):
        return f"Connection to the {peer} was lost ({err.strerror or err})"
    return f"Connection to the {peer} failed: {err}"
