"""A stopped sender stops reading and compressing at once, whatever the data.

The cause of test_receiver_daemon_killed_mid_transfer failing under heavy
load: after the receiver died, the sender's read-ahead thread went on
compressing every remaining block of the disk (a compressed block hands its
pool buffer straight back, so the pool never ran dry, and the pool only
looked at the stop flag when it was empty).  The stream thread waits for that
thread before letting go of the disk, so registry.cleanup's 30 s join ran out
on a loaded machine and the sender stayed listed.  Here the read-ahead thread
gets a real file of compressible data and a real zstd codec; once stopped it
may finish the piece in hand, not the disk.  The same hand-back let it read
and compress ahead of the socket without bound (a whole disk's compressed
frames in memory behind a slow network): a compressed frame now keeps its
pool buffer until it is sent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ganeti.storage.extents import DiskReader
from ganeti.transfer import protocol as proto
from ganeti.transfer.node import BufferPool, sender

PIECES = 64


def _text_image(path: Path) -> Path:
    line = b"every line of this disk compresses well with zstd and zlib alike\n"
    with open(path, "wb") as handle:
        handle.write((line * (sender.SEND_PIECE // len(line) + 1))[:sender.SEND_PIECE] * PIECES)
    return path


def test_stopped_producer_does_not_read_the_rest_of_the_disk(tmp_path: Path) -> None:
    with DiskReader(_text_image(tmp_path / "disk")) as reader:
        producer = sender._Producer(reader, proto.Codec("zstd", 3), True, "blake3-4m")
        producer.start()
        kind, _item, raw, _done = producer.ready.get(timeout=60)
        assert kind == "zframe" and raw == sender.SEND_PIECE  # compressed
        producer.stop.set()
        producer.join(timeout=120)
        assert not producer.is_alive()
    # the piece handed over, those in the pipeline and the one in hand; not 64
    assert producer.progress.read_bytes <= (sender.PIPELINE_DEPTH + 2) * sender.SEND_PIECE, (
        f"read {producer.progress.read_bytes // sender.SEND_PIECE} of {PIECES} pieces"
        " after being stopped")
    kinds = []
    while not producer.ready.empty():
        kinds.append(producer.ready.get()[0])
    assert kinds[-1] == "error"  # it ends with TransferAborted, not a finished checksum


def test_pool_gives_no_buffer_once_stopped_even_with_free_ones() -> None:
    pool = BufferPool(3, 16)
    assert pool.get(lambda: False) is not None
    assert pool.get(threading.Event().is_set) is not None
    assert pool.get(lambda: True) is None  # one is still free: stopped wins


def test_compressed_frames_in_flight_are_bounded_by_the_pool(tmp_path: Path) -> None:
    """Nobody sends: the reader stops after the pool's few pieces, compressed or not
    (it used to compress the whole disk into memory ahead of a slow network)."""
    with DiskReader(_text_image(tmp_path / "disk")) as reader:
        producer = sender._Producer(reader, proto.Codec("zstd", 1), True, "blake3-4m")
        producer.start()
        bound = (sender.PIPELINE_DEPTH + 1) * sender.SEND_PIECE
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and producer.progress.read_bytes <= bound \
                and producer.is_alive():
            time.sleep(0.05)
        read_while_blocked = producer.progress.read_bytes
        # now send (as _pump does: each frame's buffer back to the pool once sent)
        kinds = []
        while True:
            kind, item, _raw, _done = producer.ready.get(timeout=60)
            kinds.append(kind)
            if kind in ("end", "error"):
                break
            if kind == "buf":
                producer.pool.put(item)
            elif kind == "zframe":
                producer.pool.put(item[1])
        producer.join(timeout=60)
    assert read_while_blocked <= bound, (
        f"read {read_while_blocked // sender.SEND_PIECE} of {PIECES} pieces ahead of the"
        " socket")
    assert kinds[-1] == "end" and kinds.count("zframe") == PIECES
    assert producer.progress.read_bytes == PIECES * sender.SEND_PIECE
