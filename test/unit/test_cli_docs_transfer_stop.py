"""A stopped sender stops reading and compressing at once, whatever the data.

The cause of test_receiver_daemon_killed_mid_transfer failing under heavy
load: after the receiver died, the sender's read-ahead thread went on
compressing every remaining block of the disk (a compressed block hands its
pool buffer straight back, so the pool never ran dry, and the pool only
looked at the stop flag when it was empty).  The stream thread waits for that
thread before letting go of the disk, so registry.cleanup's 30 s join ran out
on a loaded machine and the sender stayed listed.  Here the read-ahead thread
gets a real file of compressible data and a real zstd codec; once stopped it
may finish the piece in hand, not the disk.
"""

from __future__ import annotations

import threading
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
        assert kind == "frame" and raw == sender.SEND_PIECE  # compressed: buffer went back
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
