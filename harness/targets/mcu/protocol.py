"""Host side of the MCU frame protocol: framing, CRC and message (de)serialisation, no I/O.

Wire format (the device side is ``devices/firmware/src/protocol.c``)::

    frame on the wire = COBS(body) 0x00
    body              = type (u8) | seq (u16 LE) | payload | CRC-32 (u32 LE)

The CRC-32 is IEEE 802.3 (``zlib.crc32``) over type, seq and payload. COBS removes every zero
byte from the body, so 0x00 only ever delimits frames and a receiver can resynchronise after
garbage at the next delimiter. A reply carries the seq of the request it answers; the device's
unsolicited boot banner is a HELLO with seq 0. Every malformed frame raises
:class:`~harness.core.errors.ProtocolError`, so corruption is detected, never silently accepted.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar, Union

from harness.core.errors import ProtocolError

PROTOCOL_VERSION = 2  # 2: batched INFER, PROFILE, HELLO's max_batch and kernels
FRAME_DELIMITER = b"\x00"
HEADER_BYTES = 3  # type u8 + seq u16
CRC_BYTES = 4
MAX_SEQ = 0xFFFF
SEQ_UNKNOWN = 0xFFFF  # seq of the device's ERROR reply to a frame it could not decode
MAX_BODY_BYTES = 64 * 1024  # far above any frame the firmware accepts; guards against garbage


class MessageType(enum.IntEnum):
    """Message type byte; requests have bit 7 clear, device replies have it set."""

    HELLO_REQUEST = 0x01
    PING = 0x02
    INFER = 0x03
    PROFILE = 0x04
    HELLO = 0x81
    PONG = 0x82
    INFER_RESULT = 0x83
    PROFILE_RESULT = 0x84
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """Codes of the device's ERROR message (``HIL_ERR_*`` in the firmware)."""

    BAD_FRAME = 1
    FRAME_TOO_LONG = 2
    UNKNOWN_TYPE = 3
    BAD_LENGTH = 4
    MODEL_FAILED = 5
    MODEL_TOO_LARGE = 6


class TimerKind(enum.IntEnum):
    """What the device's ticks count (HELLO field)."""

    SYSTICK = 0  # SysTick on the core clock; under QEMU -icount it counts instructions
    DWT = 1  # DWT CYCCNT: CPU cycles on a real board


# ---------------------------------------------------------------------------------------------
# COBS, CRC-32 and frames
# ---------------------------------------------------------------------------------------------


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` without zero bytes, delimiter not included.

    Each zero-separated chunk becomes blocks of at most 254 bytes, each prefixed by a code byte
    (block length + 1); code 0xFF marks a full block with no implied zero after it. Minimal
    form: a final chunk that is an exact multiple of 254 bytes gets no trailing empty block.
    """
    out = bytearray()
    chunks = data.split(b"\x00")
    for position, chunk in enumerate(chunks):
        is_last = position == len(chunks) - 1
        full_blocks, rest = divmod(len(chunk), 254)
        for block in range(full_blocks):
            out.append(0xFF)
            out += chunk[block * 254 : (block + 1) * 254]
        if rest or not is_last or full_blocks == 0:
            out.append(rest + 1)
            out += chunk[full_blocks * 254 :]
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises ProtocolError on a zero byte or a truncated block."""
    out = bytearray()
    index = 0
    length = len(encoded)
    while index < length:
        code = encoded[index]
        if code == 0:
            raise ProtocolError(f"bad COBS: zero byte at offset {index}")
        end = index + code
        if end > length:
            raise ProtocolError(
                f"bad COBS: block at offset {index} needs {code - 1} bytes, {length - index - 1} left"
            )
        block = encoded[index + 1 : end]
        if 0 in block:
            raise ProtocolError(f"bad COBS: zero byte inside block at offset {index}")
        out += block
        index = end
        if code != 0xFF and index < length:
            out.append(0)
    return bytes(out)


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the same as ``zlib.crc32``."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """One decoded frame: message type byte, sequence number, payload."""

    type: int
    seq: int
    payload: bytes


def encode_frame(frame: Frame) -> bytes:
    """Frame -> bytes on the wire, delimiter included."""
    if not 0 <= frame.type <= 0xFF:
        raise ValueError(f"frame type {frame.type} does not fit a byte")
    if not 0 <= frame.seq <= MAX_SEQ:
        raise ValueError(f"seq {frame.seq} does not fit 16 bits")
    head = struct.pack("<BH", frame.type, frame.seq) + frame.payload
    body = head + struct.pack("<I", crc32(head))
    return cobs_encode(body) + FRAME_DELIMITER


def decode_frame(wire: bytes) -> Frame:
    """Bytes of one frame (with or without the trailing delimiter) -> Frame.

    Raises ProtocolError for bad COBS, a body too short or too long, or a CRC mismatch.
    """
    if wire.endswith(FRAME_DELIMITER):
        wire = wire[:-1]
    if FRAME_DELIMITER in wire:
        raise ProtocolError("bad frame: delimiter inside the frame")
    body = cobs_decode(wire)
    if len(body) < HEADER_BYTES + CRC_BYTES:
        raise ProtocolError(f"bad frame length: {len(body)} bytes, need at least {HEADER_BYTES + CRC_BYTES}")
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"bad frame length: {len(body)} bytes, limit {MAX_BODY_BYTES}")
    head, (received_crc,) = body[:-CRC_BYTES], struct.unpack("<I", body[-CRC_BYTES:])
    expected_crc = crc32(head)
    if received_crc != expected_crc:
        raise ProtocolError(f"bad CRC: frame says {received_crc:#010x}, computed {expected_crc:#010x}")
    frame_type, seq = struct.unpack_from("<BH", head)
    return Frame(type=frame_type, seq=seq, payload=head[HEADER_BYTES:])


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


def _expect_empty(name: str, payload: bytes) -> None:
    if payload:
        raise ProtocolError(f"bad {name} payload: expected none, got {len(payload)} bytes")


@dataclass(frozen=True)
class HelloRequest:
    """Host asks the device to describe itself."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO_REQUEST

    def to_payload(self) -> bytes:
        return b""

    @classmethod
    def from_payload(cls, payload: bytes) -> "HelloRequest":
        _expect_empty("HELLO_REQUEST", payload)
        return cls()


_HELLO_FIXED = struct.Struct("<BB8sHHHBHIIIBIIIIBB")  # 50 bytes, then u8 name length + name


@dataclass(frozen=True)
class Hello:
    """The device's self-description: boot banner (seq 0) and reply to HELLO_REQUEST."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO

    protocol_version: int
    node_id: int
    model_hash: bytes  # first 8 bytes of the model's sha256
    input_h: int
    input_w: int
    code_len: int  # k
    code_bits: int  # q
    code_bytes: int  # ceil(k*q/8)
    macs: int
    clock_hz: int
    timer_hz: int
    timer_kind: TimerKind
    flash_used: int  # bytes of flash the image occupies (text + rodata + data load image)
    ram_used: int  # bytes of RAM: data + bss + reserved stack
    stack_size: int  # reserved stack bytes
    max_input_bytes: int  # largest INFER payload the firmware's receive buffer holds
    max_batch: int  # most samples one INFER frame may carry
    dsp_kernels: bool  # the model runs the DSP kernels (else the portable ones)
    board: str

    @property
    def input_bytes(self) -> int:
        return self.input_h * self.input_w

    def to_payload(self) -> bytes:
        name = self.board.encode("ascii")
        return (
            _HELLO_FIXED.pack(
                self.protocol_version, self.node_id, self.model_hash, self.input_h, self.input_w,
                self.code_len, self.code_bits, self.code_bytes, self.macs, self.clock_hz,
                self.timer_hz, int(self.timer_kind), self.flash_used, self.ram_used,
                self.stack_size, self.max_input_bytes, self.max_batch, int(self.dsp_kernels),
            )
            + bytes([len(name)])
            + name
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> "Hello":
        if len(payload) < _HELLO_FIXED.size + 1:
            raise ProtocolError(f"bad HELLO payload: {len(payload)} bytes, need at least {_HELLO_FIXED.size + 1}")
        fields = _HELLO_FIXED.unpack_from(payload)
        name_len = payload[_HELLO_FIXED.size]
        name = payload[_HELLO_FIXED.size + 1 :]
        if len(name) != name_len:
            raise ProtocolError(f"bad HELLO payload: board name is {len(name)} bytes, header says {name_len}")
        try:
            timer_kind = TimerKind(fields[11])
            board = name.decode("ascii")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"bad HELLO payload: {exc}") from exc
        return cls(
            protocol_version=fields[0], node_id=fields[1], model_hash=fields[2],
            input_h=fields[3], input_w=fields[4], code_len=fields[5], code_bits=fields[6],
            code_bytes=fields[7], macs=fields[8], clock_hz=fields[9], timer_hz=fields[10],
            timer_kind=timer_kind, flash_used=fields[12], ram_used=fields[13],
            stack_size=fields[14], max_input_bytes=fields[15], max_batch=fields[16],
            dsp_kernels=bool(fields[17]), board=board,
        )


@dataclass(frozen=True)
class Ping:
    """Liveness check; the device echoes ``data`` in a PONG."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    data: bytes = b""

    def to_payload(self) -> bytes:
        return self.data

    @classmethod
    def from_payload(cls, payload: bytes) -> "Ping":
        return cls(payload)


@dataclass(frozen=True)
class Pong:
    """Reply to PING with the same data."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    data: bytes = b""

    def to_payload(self) -> bytes:
        return self.data

    @classmethod
    def from_payload(cls, payload: bytes) -> "Pong":
        return cls(payload)


@dataclass(frozen=True)
class Infer:
    """Run the node encoder on one or more inputs (each input_h * input_w uint8 pixels), back to
    back in ``input``; the device splits them by its model's input size."""

    TYPE: ClassVar[MessageType] = MessageType.INFER
    input: bytes

    def to_payload(self) -> bytes:
        return self.input

    @classmethod
    def from_payload(cls, payload: bytes) -> "Infer":
        return cls(payload)


@dataclass(frozen=True)
class Profile(Infer):
    """Run the node encoder once on ``input`` and time every stage (the per-layer profile)."""

    TYPE: ClassVar[MessageType] = MessageType.PROFILE


MAX_ULEB128_BYTES = 10  # a u64


def encode_uleb128(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant first, high bit on all but the last."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} is not a u64")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_uleb128(data: bytes, offset: int) -> tuple[int, int]:
    """(value, next offset) of the ULEB128 number at ``offset``; ProtocolError if it is truncated,
    longer than a u64 takes, or not in its shortest form."""
    value = 0
    for i in range(MAX_ULEB128_BYTES):
        if offset + i >= len(data):
            raise ProtocolError(f"truncated LEB128 number at offset {offset}")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise ProtocolError(f"LEB128 number at offset {offset} is not in its shortest form")
            if value >= 1 << 64:
                raise ProtocolError(f"LEB128 number at offset {offset} exceeds a u64")
            return value, offset + i + 1
    raise ProtocolError(f"LEB128 number at offset {offset} is longer than {MAX_ULEB128_BYTES} bytes")


def _counted_ticks(name: str, payload: bytes) -> tuple[tuple[int, ...], int]:
    """A reply's count byte and that many ULEB128 tick counts: (ticks, offset after them)."""
    if not payload:
        raise ProtocolError(f"bad {name} payload: empty")
    count, offset = payload[0], 1
    ticks = []
    for _ in range(count):
        value, offset = decode_uleb128(payload, offset)
        ticks.append(value)
    return tuple(ticks), offset


def _counted_ticks_payload(ticks: tuple[int, ...]) -> bytes:
    if len(ticks) > 0xFF:
        raise ValueError(f"{len(ticks)} tick counts do not fit the count byte")
    return bytes([len(ticks)]) + b"".join(encode_uleb128(t) for t in ticks)


@dataclass(frozen=True)
class InferReply:
    """Every sample's packed code and the device timer ticks its ``hil_model_encode`` took.

    Payload: count (u8) | count ULEB128 tick counts | count codes of equal length."""

    TYPE: ClassVar[MessageType] = MessageType.INFER_RESULT
    codes: tuple[bytes, ...]
    ticks: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.codes) != len(self.ticks) or len({len(c) for c in self.codes}) > 1:
            raise ValueError("an INFER_RESULT has one tick count per code and codes of one length")

    def to_payload(self) -> bytes:
        return _counted_ticks_payload(self.ticks) + b"".join(self.codes)

    @classmethod
    def from_payload(cls, payload: bytes) -> "InferReply":
        ticks, offset = _counted_ticks("INFER_RESULT", payload)
        if not ticks:
            raise ProtocolError("bad INFER_RESULT payload: no samples")
        size, rest = divmod(len(payload) - offset, len(ticks))
        if rest:
            raise ProtocolError(f"bad INFER_RESULT payload: {len(payload) - offset} code bytes do not split into "
                                f"{len(ticks)} equal codes")
        codes = tuple(payload[offset + i * size : offset + (i + 1) * size] for i in range(len(ticks)))
        return cls(codes=codes, ticks=ticks)


@dataclass(frozen=True)
class ProfileReply:
    """The packed code and the device timer ticks of each stage, in the order the firmware marks
    them (``quant_models.codegen.model_stages``).

    Payload: count (u8) | count ULEB128 tick counts | the code."""

    TYPE: ClassVar[MessageType] = MessageType.PROFILE_RESULT
    code: bytes
    stage_ticks: tuple[int, ...]

    def to_payload(self) -> bytes:
        return _counted_ticks_payload(self.stage_ticks) + self.code

    @classmethod
    def from_payload(cls, payload: bytes) -> "ProfileReply":
        ticks, offset = _counted_ticks("PROFILE_RESULT", payload)
        return cls(code=payload[offset:], stage_ticks=ticks)


@dataclass(frozen=True)
class ErrorReply:
    """The device could not serve a request: an :class:`ErrorCode` (or unknown int) and text."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: int
    text: str

    def to_payload(self) -> bytes:
        return struct.pack("<H", self.code) + self.text.encode("utf-8")

    @classmethod
    def from_payload(cls, payload: bytes) -> "ErrorReply":
        if len(payload) < 2:
            raise ProtocolError(f"bad ERROR payload: {len(payload)} bytes, need at least 2")
        (code,) = struct.unpack_from("<H", payload)
        return cls(code=code, text=payload[2:].decode("utf-8", errors="replace"))


AnyMessage = Union[HelloRequest, Hello, Ping, Pong, Infer, InferReply, Profile, ProfileReply, ErrorReply]

MESSAGE_CLASSES: dict[MessageType, type[AnyMessage]] = {
    cls.TYPE: cls for cls in (HelloRequest, Hello, Ping, Pong, Infer, InferReply, Profile, ProfileReply, ErrorReply)
}


def encode_message(message: AnyMessage, seq: int) -> bytes:
    """Message -> bytes on the wire (delimiter included)."""
    return encode_frame(Frame(type=int(message.TYPE), seq=seq, payload=message.to_payload()))


def decode_message(wire: bytes) -> tuple[int, AnyMessage]:
    """Bytes of one frame -> (seq, message); ProtocolError if malformed or of unknown type."""
    frame = decode_frame(wire)
    try:
        message_class = MESSAGE_CLASSES[MessageType(frame.type)]
    except ValueError as exc:
        raise ProtocolError(f"unknown message type {frame.type:#04x}") from exc
    return frame.seq, message_class.from_payload(frame.payload)
