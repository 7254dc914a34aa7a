"""Properties of the wire parsers, for generated inputs (hypothesis, derandomized: the same
examples in every run).

Host (harness.targets.mcu.protocol and the serial transport's stream splitting): every message
round-trips; any bytes decode to a message or raise ProtocolError, nothing else; one flipped,
dropped or inserted byte in a frame is rejected or changes nothing; frames among garbage are
split at the delimiters and every frame after a delimiter survives. Runner
(devices/runner/hil_runner.py): frames and arrays round-trip; any bytes give requests or a
RunnerError; a cut stream gives a prefix of its requests; ``serve`` answers any input.
The long run of the same parsers (and of the firmware's receiver) is scripts/fuzz_parsers.py.
"""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from devices.runner import hil_runner as runner
from harness.core.errors import ProtocolError
from harness.targets.mcu.protocol import (
    MAX_SEQ,
    ErrorReply,
    Frame,
    Hello,
    HelloRequest,
    Infer,
    InferReply,
    Profile,
    ProfileReply,
    MessageType,
    Ping,
    Pong,
    TimerKind,
    cobs_decode,
    cobs_encode,
    crc32,
    decode_frame,
    decode_message,
    encode_frame,
    encode_message,
)
from harness.transports.serial import SerialTransport
from tests.parser_fuzz import parse_requests, serve_replies

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)
seqs = st.integers(0, MAX_SEQ)
hellos = st.builds(
    Hello, protocol_version=u8, node_id=u8, model_hash=st.binary(min_size=8, max_size=8), input_h=u16,
    input_w=u16, code_len=u16, code_bits=u8, code_bytes=u16, macs=u32, clock_hz=u32, timer_hz=u32,
    timer_kind=st.sampled_from(TimerKind), flash_used=u32, ram_used=u32, stack_size=u32, max_input_bytes=u32,
    max_batch=u8, dsp_kernels=st.booleans(), board=st.text(st.characters(max_codepoint=0x7F), max_size=255),
)
# Payload sizes reach past one and two full COBS blocks (254 bytes).
blobs = st.binary(max_size=600)
messages = st.one_of(
    st.just(HelloRequest()), hellos, st.builds(Ping, blobs), st.builds(Pong, blobs), st.builds(Infer, blobs),
    st.integers(1, 8).flatmap(lambda n: st.builds(
        InferReply, codes=st.integers(0, 40).flatmap(lambda size: st.tuples(*[st.binary(min_size=size, max_size=size)] * n)),
        ticks=st.tuples(*[st.integers(0, 2**64 - 1)] * n))),
    st.builds(Profile, blobs),
    st.builds(ProfileReply, code=blobs, stage_ticks=st.lists(st.integers(0, 2**64 - 1), max_size=20).map(tuple)),
    st.builds(ErrorReply, code=u16, text=st.text(max_size=100)),
)


@PROPERTY
@given(messages, seqs)
def test_every_message_round_trips(message, seq: int) -> None:
    wire = encode_message(message, seq)
    assert wire.index(0) == len(wire) - 1
    assert decode_message(wire) == (seq, message)


@PROPERTY
@given(st.binary(max_size=1200))
def test_cobs_round_trips_any_bytes(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded and len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


def _decode_or_none(wire: bytes):
    """decode_message's result, or None for a ProtocolError; any other exception fails the test."""
    try:
        return decode_message(wire)
    except ProtocolError:
        return None


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_frame_or_protocol_error(wire: bytes) -> None:
    decoded = _decode_or_none(wire)
    if decoded is not None:  # a chance CRC match: the frame must still be self-consistent
        seq, message = decoded
        assert decode_message(encode_message(message, seq)) == decoded


# Bodies with a correct CRC, so the message decoders see arbitrary payloads: mostly known types,
# and HELLO-shaped payloads whose board-name length may or may not agree.
hello_shaped = st.tuples(st.binary(min_size=48, max_size=48), u8, st.binary(max_size=40)).map(
    lambda parts: parts[0] + bytes([parts[1] % 48]) + parts[2])
frame_types = st.one_of(st.sampled_from(MessageType).map(int), u8)


@PROPERTY
@given(frame_types, seqs, st.one_of(st.binary(max_size=80), hello_shaped))
def test_any_payload_decodes_to_a_message_that_re_encodes_to_the_same_bytes(
        frame_type: int, seq: int, payload: bytes) -> None:
    wire = encode_frame(Frame(frame_type, seq, payload))
    decoded = _decode_or_none(wire)
    if decoded is None:
        return
    message = decoded[1]
    if isinstance(message, ErrorReply) and "\ufffd" in message.text:
        # The one lossy field, by design: device text that is not UTF-8 is decoded with
        # replacement characters, so the message re-encodes to different (valid) bytes.
        assert decode_message(encode_message(message, seq)) == decoded
    else:
        assert encode_message(message, seq) == wire


faults = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2000), st.integers(0, 7)),
    st.tuples(st.just("drop"), st.integers(0, 2000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2000), u8),
)


def _apply(fault: tuple[str, int, int], data: bytes) -> bytes:
    kind, position, value = fault
    damaged = bytearray(data)
    if kind == "insert":
        damaged.insert(position % (len(data) + 1), value)
    elif kind == "drop":
        del damaged[position % len(data)]
    else:
        damaged[position % len(data)] ^= 1 << value
    return bytes(damaged)


@PROPERTY
@given(messages, seqs, faults)
def test_one_damaged_byte_is_rejected_or_changes_nothing(message, seq: int, fault) -> None:
    wire = encode_message(message, seq)
    damaged = _apply(fault, wire[:-1]) + b"\x00"
    decoded = _decode_or_none(damaged)
    assert decoded is None or decoded == (seq, message), f"{fault} accepted as {decoded}"


def test_a_trailing_empty_cobs_block_changes_nothing() -> None:
    """What a single-fault test can meet: the firmware's streaming encoder ends a body whose
    last zero-free run is 254 bytes with an empty block (0x01); the host accepts both forms."""
    frame = next(f for f in (Frame(0x02, 0x0101, bytes([n]) * 247) for n in range(1, 256))
                 if 0 not in struct.pack("<I", crc32(bytes([2, 1, 1]) + f.payload)))
    wire = encode_frame(frame)
    assert wire[0] == 0xFF and len(wire) == 256
    assert decode_frame(wire[:-1] + b"\x01\x00") == frame


sentinel = encode_message(Ping(b"end of stream"), MAX_SEQ)
segments = st.lists(st.one_of(st.tuples(messages, seqs).map(lambda m: encode_message(*m)),
                              st.binary(max_size=60)), max_size=8)


@PROPERTY
@given(segments)
def test_frames_among_garbage_are_split_at_the_delimiters(parts: list[bytes]) -> None:
    """Through the serial transport's reader (pyserial's loop://): the pieces it returns are
    the stream's non-empty 0x00-separated pieces, and a frame that follows a delimiter (or
    starts the stream) comes out whole, whatever garbage came before."""
    stream = b"".join(parts) + b"\x00"
    transport = SerialTransport("loop://")
    transport.open()
    try:
        transport.write_frame(stream + sentinel)
        pieces = []
        while (piece := transport.read_frame(1.0)) != sentinel[:-1]:
            assert piece is not None, "the reader stopped before the end of the stream"
            pieces.append(piece)
    finally:
        transport.close()
    assert pieces == [piece for piece in stream.split(b"\x00") if piece]
    offset = 0
    for part in parts:
        if (offset == 0 or stream[offset - 1] == 0) and part.endswith(b"\x00") and part.count(0) == 1:
            if _decode_or_none(part) is not None:
                assert part[:-1] in pieces
        offset += len(part)


# --- the Linux runner's requests --------------------------------------------------------------

requests = st.tuples(u8, st.binary(max_size=300))
arrays = hnp.arrays(st.sampled_from([np.uint8, np.float32, np.int64]),
                    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))


@PROPERTY
@given(st.lists(requests, max_size=4))
def test_runner_frames_round_trip(sent: list[tuple[int, bytes]]) -> None:
    stream = io.BytesIO(b"".join(runner.encode_frame(kind, payload) for kind, payload in sent))
    assert [runner.read_frame(stream) for _ in sent] == sent
    assert runner.read_frame(stream) is None


@PROPERTY
@given(arrays, st.binary(max_size=8))
def test_runner_arrays_round_trip(array: np.ndarray, tail: bytes) -> None:
    payload = runner.encode_array(array) + tail
    decoded, end = runner.decode_array(payload)
    assert (decoded.dtype, decoded.shape) == (array.dtype, array.shape)
    assert decoded.tobytes() == array.tobytes() and payload[end:] == tail


def _parse(stream: bytes) -> list[tuple[int, bytes]] | str:
    """The requests parse_requests yields, or the text of the RunnerError that ended it."""
    parsed: list[tuple[int, bytes]] = []
    try:
        for kind, payload, _ in parse_requests(stream):
            parsed.append((kind, payload))
    except runner.RunnerError as exc:
        return str(exc)
    return parsed


# Array headers near the limits: any dtype code, up to 70 dimensions, sizes 0, 1, huge.
dims = st.lists(st.sampled_from([0, 1, 2, 14, 2**31, 2**32 - 1]), max_size=70)
array_headers = st.tuples(u8, dims, st.binary(max_size=40)).map(
    lambda h: bytes([h[0], len(h[1])]) + b"".join(struct.pack(">I", d) for d in h[1]) + h[2])
infer_frames = array_headers.map(lambda payload: runner.encode_frame(runner.INFER, payload))


@PROPERTY
@given(st.one_of(st.binary(max_size=200), infer_frames,
                 st.tuples(u32, st.binary(max_size=40)).map(lambda t: struct.pack(">I", t[0]) + t[1])))
def test_any_bytes_give_requests_or_a_runner_error(stream: bytes) -> None:
    _parse(stream)


well_formed_requests = st.one_of(st.tuples(u8.filter(lambda kind: kind != runner.INFER), st.binary(max_size=300)),
                                arrays.map(lambda a: (runner.INFER, runner.encode_array(a))))


@PROPERTY
@given(st.lists(well_formed_requests, min_size=1, max_size=3), st.integers(0, 10**6))
def test_a_cut_request_stream_gives_a_prefix_or_an_error(sent: list[tuple[int, bytes]], cut: int) -> None:
    stream = b"".join(runner.encode_frame(kind, payload) for kind, payload in sent)
    cut %= len(stream) + 1
    ends = np.cumsum([0] + [5 + len(payload) for _, payload in sent])
    parsed = _parse(stream[:cut])
    if cut in ends:
        assert parsed == sent[:list(ends).index(cut)]
    else:
        assert isinstance(parsed, str), f"a stream cut at {cut} of {len(stream)} bytes was accepted"


@PROPERTY
@given(st.one_of(st.binary(max_size=200), infer_frames, st.lists(requests, max_size=3).map(
    lambda sent: b"".join(runner.encode_frame(kind, payload) for kind, payload in sent))))
def test_serve_answers_any_input_and_never_raises(stream: bytes) -> None:
    status, kinds = serve_replies(stream)
    assert status in (0, 2)
    assert set(kinds) <= {runner.RESULT, runner.INFO, runner.ERROR}


NUMPY_REFUSED_SHAPES = [
    pytest.param(bytes([1, 65]) + struct.pack(">I", 1) * 65 + b"\x07", id="65-dimensions"),
    pytest.param(bytes([1, 3]) + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1), id="empty-but-too-big"),
    pytest.param(bytes([1, 4]) + struct.pack(">4I", 2, 2**31, 2**31, 0), id="empty-product-overflows"),
]


@pytest.mark.parametrize("payload", NUMPY_REFUSED_SHAPES)
def test_runner_refuses_shapes_numpy_cannot_hold(payload: bytes) -> None:
    with pytest.raises(runner.RunnerError):
        runner.decode_array(payload)
