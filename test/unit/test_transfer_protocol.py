"""Framing of the transfer stream: round trips and every way a frame can be bad."""

from __future__ import annotations

import io
import os

import pytest

from ganeti.transfer import BLOCK_SIZE, COMPRESS_GZIP, COMPRESS_NONE, COMPRESS_ZSTD
from ganeti.transfer import protocol as proto


def _reader(data: bytes, max_payload: int = proto.MAX_PAYLOAD) -> proto.FrameReader:
    stream = io.BytesIO(data)
    return proto.FrameReader(stream.readinto, max_payload)


def test_json_frames_round_trip() -> None:
    header = proto.make_header("m" * 32, 12345, 4096, COMPRESS_ZSTD)
    data = proto.encode_json(proto.HEADER, header) + proto.encode_json(proto.READY, {})
    frames = _reader(data)
    ftype, payload = frames.read()
    assert ftype == proto.HEADER
    assert proto.decode_json(payload) == header
    ftype, payload = frames.read()
    assert (ftype, proto.decode_json(payload)) == (proto.READY, {})
    with pytest.raises(proto.ConnectionClosed):
        frames.read()


def test_data_frame_round_trip_with_prefix_in_place() -> None:
    body = os.urandom(1000)
    buf = bytearray(proto.DATA_PREFIX + len(body))
    buf[proto.DATA_PREFIX:] = body
    proto.pack_data_prefix(buf, 7 * BLOCK_SIZE + 5, len(body), proto.ENC_RAW, len(body))
    assert bytes(buf[:proto.DATA_PREFIX]) == proto.data_prefix(
        7 * BLOCK_SIZE + 5, len(body), proto.ENC_RAW, len(body))
    ftype, payload = _reader(bytes(buf)).read()
    assert ftype == proto.DATA
    offset, raw_len, encoding, got = proto.decode_data(payload)
    assert (offset, raw_len, encoding, bytes(got)) == (7 * BLOCK_SIZE + 5, 1000,
                                                       proto.ENC_RAW, body)


def test_truncated_frame_is_an_error_not_a_clean_close() -> None:
    frame = proto.encode_json(proto.END, {"data_bytes": 1, "checksum": "x"})
    with pytest.raises(proto.ProtocolError, match="middle of a frame") as info:
        _reader(frame[:-3]).read()
    assert not isinstance(info.value, proto.ConnectionClosed)
    with pytest.raises(proto.ProtocolError, match="middle of a frame"):
        _reader(frame[:2]).read()


def test_oversized_frame_refused_before_reading_payload() -> None:
    head = proto.FRAME_HEAD.pack(proto.DATA, proto.MAX_PAYLOAD + 1)
    with pytest.raises(proto.ProtocolError, match="exceeds the limit"):
        _reader(head).read()
    with pytest.raises(proto.ProtocolError):
        proto.encode_frame(proto.DATA, bytes(proto.MAX_PAYLOAD + 1))


def test_unknown_frame_type_refused() -> None:
    with pytest.raises(proto.ProtocolError, match="Unknown frame type 99"):
        _reader(proto.FRAME_HEAD.pack(99, 0)).read()


def test_error_frame_raises_peer_error_with_message() -> None:
    frames = _reader(proto.encode_json(proto.ERROR, {"message": "disk full"}))
    with pytest.raises(proto.PeerError, match="disk full"):
        frames.expect(proto.READY)


def test_unexpected_frame_type() -> None:
    with pytest.raises(proto.ProtocolError, match="Expected READY, got ACK"):
        _reader(proto.encode_json(proto.ACK, {})).expect(proto.READY)


def test_header_checks() -> None:
    good = proto.make_header("a" * 32, 100, 100, COMPRESS_NONE)
    proto.check_header(good, "a" * 32, 100)
    proto.check_header(good, "a" * 32, None)
    with pytest.raises(proto.ProtocolError, match="Unsupported protocol version 1"):
        proto.check_header({**good, "version": 1}, "a" * 32, 100)
    assert good["checksum"] == "blake3-4m"
    proto.check_header({**good, "checksum": "sha256-4m"}, "a" * 32, 100)
    with pytest.raises(proto.ProtocolError, match="Wrong stream magic"):
        proto.check_header(good, "b" * 32, 100)
    with pytest.raises(proto.ProtocolError, match="expects 101"):
        proto.check_header(good, "a" * 32, 101)
    with pytest.raises(proto.ProtocolError, match="compression"):
        proto.check_header({**good, "compress": "lzma"}, "a" * 32, 100)
    with pytest.raises(proto.ProtocolError, match="checksum"):
        proto.check_header({**good, "checksum": "md5"}, "a" * 32, 100)
    with pytest.raises(proto.ProtocolError, match="size"):
        proto.check_header({**good, "size": -1}, "a" * 32, None)


def test_malformed_json_payload() -> None:
    with pytest.raises(proto.ProtocolError, match="Malformed"):
        proto.decode_json(b"{not json")
    with pytest.raises(proto.ProtocolError, match="not a JSON object"):
        proto.decode_json(b"[1, 2]")


@pytest.mark.parametrize("compress", [COMPRESS_ZSTD, COMPRESS_GZIP])
def test_codec_round_trip_and_raw_fallback(compress: str) -> None:
    codec = proto.Codec(compress, 3)
    text = memoryview(b"ganeti " * 100000)
    encoding, body = codec.compress(text)
    assert encoding != proto.ENC_RAW and len(body) < len(text) // 10
    assert bytes(codec.decompress(encoding, memoryview(bytes(body)), len(text))) == text
    noise = memoryview(os.urandom(65536))
    encoding, body = codec.compress(noise)
    assert encoding == proto.ENC_RAW and bytes(body) == bytes(noise)


def test_codec_refuses_wrong_length_and_garbage() -> None:
    codec = proto.Codec(COMPRESS_ZSTD, 3)
    encoding, body = codec.compress(memoryview(bytes(10000)))
    with pytest.raises(proto.ProtocolError):
        codec.decompress(encoding, memoryview(bytes(body)), 9999)
    with pytest.raises(proto.ProtocolError, match="decompress"):
        codec.decompress(proto.ENC_ZLIB, memoryview(b"garbage"), 10)
    with pytest.raises(proto.ProtocolError, match="encoding"):
        codec.decompress(9, memoryview(b"x"), 1)
