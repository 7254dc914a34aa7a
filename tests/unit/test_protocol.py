"""Framing, CRC and message round trips of harness.targets.mcu.protocol, against hand-made vectors."""
from __future__ import annotations

import random
import zlib

import pytest

from harness.core.errors import ProtocolError
from harness.targets.mcu.protocol import (
    ErrorReply,
    Frame,
    Hello,
    HelloRequest,
    Infer,
    InferReply,
    Ping,
    Pong,
    Profile,
    ProfileReply,
    TimerKind,
    cobs_decode,
    cobs_encode,
    crc32,
    decode_frame,
    decode_message,
    decode_uleb128,
    encode_frame,
    encode_message,
    encode_uleb128,
)

# Examples from the COBS paper / Wikipedia (delimiter not included).
COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize("raw, encoded", COBS_VECTORS)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@pytest.mark.parametrize("length", [0, 1, 253, 254, 255, 256, 508, 509, 1000])
@pytest.mark.parametrize("fill", [0x00, 0x01, 0xFF])
def test_cobs_round_trip_runs(length: int, fill: int) -> None:
    raw = bytes([fill]) * length
    encoded = cobs_encode(raw)
    assert 0 not in encoded
    assert cobs_decode(encoded) == raw


def test_cobs_round_trip_random() -> None:
    rng = random.Random(1234)
    for _ in range(500):
        raw = bytes(rng.choice([0, 1, 0x7F, 0xFF]) for _ in range(rng.randrange(0, 700)))
        encoded = cobs_encode(raw)
        assert 0 not in encoded
        assert len(encoded) <= len(raw) + len(raw) // 254 + 1
        assert cobs_decode(encoded) == raw


@pytest.mark.parametrize(
    "encoded",
    [b"\x03\x11", b"\x05\x11\x22\x33", b"\x02\x00", b"\x00", b"\x03\x11\x00\x22"],
    ids=["short-block", "truncated", "zero-in-block", "zero-code", "embedded-zero"],
)
def test_cobs_decode_rejects_malformed(encoded: bytes) -> None:
    with pytest.raises(ProtocolError, match="bad COBS"):
        cobs_decode(encoded)


@pytest.mark.parametrize("data", [b"", b"123456789", bytes(range(256)) * 3])
def test_crc32_matches_zlib(data: bytes) -> None:
    assert crc32(data) == zlib.crc32(data)


def test_crc32_check_value() -> None:
    # The CRC-32/ISO-HDLC check value from the CRC catalogue.
    assert crc32(b"123456789") == 0xCBF43926


def test_frame_layout() -> None:
    frame = Frame(type=0x03, seq=0x0201, payload=b"\x00\xAA")
    wire = encode_frame(frame)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    body = cobs_decode(wire[:-1])
    head = b"\x03\x01\x02\x00\xAA"
    assert body == head + zlib.crc32(head).to_bytes(4, "little")
    assert decode_frame(wire) == frame
    assert decode_frame(wire[:-1]) == frame


def test_corrupted_byte_raises_protocol_error() -> None:
    wire = encode_frame(Frame(type=0x83, seq=7, payload=bytes(range(1, 40))))
    for index in range(len(wire) - 1):
        damaged = bytearray(wire)
        damaged[index] ^= 0x10 if damaged[index] != 0x10 else 0x20
        with pytest.raises(ProtocolError):
            decode_frame(bytes(damaged))


@pytest.mark.parametrize("keep", [0, 1, 3, 6, 10])
def test_truncated_frame_raises_protocol_error(keep: int) -> None:
    wire = encode_frame(Frame(type=0x81, seq=1, payload=b"abcdef"))
    with pytest.raises(ProtocolError):
        decode_frame(wire[:keep] + b"\x00")


def test_frame_too_short_names_length() -> None:
    with pytest.raises(ProtocolError, match="bad frame length"):
        decode_frame(cobs_encode(b"\x01\x02\x03") + b"\x00")


def test_unknown_message_type() -> None:
    with pytest.raises(ProtocolError, match="unknown message type 0x42"):
        decode_message(encode_frame(Frame(type=0x42, seq=1, payload=b"")))


HELLO = Hello(
    protocol_version=1, node_id=3, model_hash=bytes.fromhex("0011223344556677"), input_h=14,
    input_w=14, code_len=16, code_bits=4, code_bytes=8, macs=80_000, clock_hz=168_000_000,
    timer_hz=168_000_000, timer_kind=TimerKind.SYSTICK, flash_used=40_000, ram_used=20_000,
    stack_size=8192, max_input_bytes=4096, max_batch=16, dsp_kernels=True, board="netduinoplus2",
)


@pytest.mark.parametrize(
    "message",
    [
        HelloRequest(),
        HELLO,
        Ping(b"\x00\x01ping"),
        Pong(b""),
        Infer(bytes(196)),
        Infer(bytes(range(196)) * 3),
        InferReply(codes=(b"\x12\x34",), ticks=(2**40 + 5,)),
        InferReply(codes=(b"\x12\x34", b"\x00\x00", b"\xff\x01"), ticks=(0, 127, 2**64 - 1)),
        Profile(bytes(196)),
        ProfileReply(code=b"\x00\x07", stage_ticks=(5, 300_000, 128)),
        ProfileReply(code=b"", stage_ticks=()),
        ErrorReply(code=4, text="bad length"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_message_round_trip(message: object) -> None:
    seq, decoded = decode_message(encode_message(message, seq=513))  # type: ignore[arg-type]
    assert seq == 513
    assert decoded == message


def test_hello_payload_is_50_bytes_plus_name() -> None:
    assert len(HELLO.to_payload()) == 50 + 1 + len("netduinoplus2")


def test_hello_with_wrong_name_length_is_rejected() -> None:
    payload = bytearray(HELLO.to_payload())
    payload[50] += 1
    with pytest.raises(ProtocolError, match="board name"):
        Hello.from_payload(bytes(payload))


@pytest.mark.parametrize("payload, match", [
    (b"", "empty"),
    (b"\x00", "no samples"),
    (b"\x02\x05", "truncated LEB128"),
    (b"\x01\x85", "truncated LEB128"),
    (b"\x02\x05\x06\x01\x02\x03", "do not split into 2 equal codes"),
    (b"\x01" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x01\x80\x00\x12", "shortest form"),
    (b"\x01" + b"\xff" * 9 + b"\x7f\x12", "exceeds a u64"),
])
def test_bad_infer_replies_are_rejected(payload: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        InferReply.from_payload(payload)


@pytest.mark.parametrize("value, wire", [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                         (300, b"\xac\x02"), (2**64 - 1, b"\xff" * 9 + b"\x01")])
def test_uleb128_matches_the_reference_encoding(value: int, wire: bytes) -> None:
    assert encode_uleb128(value) == wire
    assert decode_uleb128(b"\xaa" + wire + b"\xbb", 1) == (value, 1 + len(wire))


def test_infer_reply_codes_and_ticks_must_pair() -> None:
    with pytest.raises(ValueError):
        InferReply(codes=(b"\x01", b"\x02"), ticks=(1,))
    with pytest.raises(ValueError):
        InferReply(codes=(b"\x01", b"\x02\x03"), ticks=(1, 2))
