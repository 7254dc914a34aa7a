"""Generated inputs for the three wire parsers, and the firmware's frame receiver built for the host.

The parsers:

- host: :func:`harness.targets.mcu.protocol.decode_message` on the 0x00-delimited pieces of a
  byte stream (what the serial transport hands it);
- firmware: ``hil_receive_frame`` of ``devices/firmware/src/protocol.c``, compiled by the host
  gcc with AddressSanitizer and UBSan together with ``tests/fixtures/firmware/fuzz_protocol.c``,
  which feeds it a whole stream and reports every frame it returns; each result must equal what
  the host decoder says about the same piece;
- runner: the request side of ``devices/runner/hil_runner.py`` (``read_frame``, then
  ``decode_array`` of an INFER), and its ``serve`` loop, which must survive any input.

Corpora come from a seed (``random.Random``), so a run is reproducible from its command. Shared
by ``tests/unit/test_frame_parser_fuzz.py`` (CI-sized corpora) and
``scripts/fuzz_parsers.py`` (the recorded run of >= 10^5 inputs per parser).
"""
from __future__ import annotations

import bisect
import contextlib
import io
import itertools
import os
import random
import re
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from devices.runner import hil_runner as runner
from harness.core.errors import ProtocolError
from harness.core.paths import FIRMWARE_SRC
from harness.targets.mcu.protocol import (
    ErrorCode,
    ErrorReply,
    Frame,
    Hello,
    InferReply,
    MessageType,
    ProfileReply,
    TimerKind,
    decode_frame,
    decode_message,
    encode_frame,
    encode_message,
)

FRAME_HARNESS_SOURCE = Path(__file__).resolve().parent / "fixtures" / "firmware" / "fuzz_protocol.c"
SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
# Every finding ends the process; leak checking needs ptrace, which containers often forbid.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}

RX_CAPACITY_DEFAULT_FIRMWARE = 4121
"""main.c's receive buffer for the default HIL_MAX_INPUT_BYTES = 4096: body 4103 + 4103 / 254 + 2."""
RX_CAPACITY_14X14 = 205
"""The same for HIL_MAX_INPUT_BYTES = 196 (a 14x14 view): body 203 + 0 + 2."""


# ---------------------------------------------------------------------------------------------
# Byte-level mutations (shared by both frame formats)
# ---------------------------------------------------------------------------------------------

def _flip(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 3)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _drop(rng: random.Random, data: bytearray) -> None:
    if data:
        del data[rng.randrange(len(data))]


def _insert(rng: random.Random, data: bytearray) -> None:
    data.insert(rng.randrange(len(data) + 1), 0 if rng.random() < 0.1 else rng.randrange(256))


def _truncate(rng: random.Random, data: bytearray) -> None:
    del data[rng.randrange(len(data) + 1):]


def _duplicate(rng: random.Random, data: bytearray) -> None:
    start = rng.randrange(len(data) + 1)
    end = rng.randint(start, min(len(data), start + 16))
    data[end:end] = data[start:end]


MUTATIONS: dict[str, Callable[[random.Random, bytearray], None]] = {
    "flip": _flip, "drop": _drop, "insert": _insert, "truncate": _truncate, "duplicate": _duplicate,
}


def mutate(rng: random.Random, data: bytes, kind: str) -> bytes:
    damaged = bytearray(data)
    MUTATIONS[kind](rng, damaged)
    return bytes(damaged)


_HALF_ZERO = bytes(i if i >= 128 else 0 for i in range(256))
_NO_ZERO = bytes([1]) + bytes(range(1, 256))


def _payload_bytes(rng: random.Random, length: int) -> bytes:
    """Random, zero-heavy, zero-free (long COBS blocks) or all-zero bytes."""
    style = rng.randrange(4)
    if style == 3:
        return bytes(length)
    return rng.randbytes(length).translate((None, _HALF_ZERO, _NO_ZERO)[style])


# ---------------------------------------------------------------------------------------------
# MCU frames: corpus, host decoder, firmware receiver
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameInput:
    """One generated input: the bytes (ending with a delimiter) and the frames encoded into it.

    A piece of ``stream`` that a decoder accepts must be one of ``sent``: anything else is a
    damaged frame accepted."""

    kind: str
    stream: bytes
    sent: tuple[Frame, ...]

    def pieces(self) -> list[bytes]:
        """The non-empty 0x00-delimited pieces, as a receiver splits them."""
        return [piece for piece in self.stream.split(b"\x00") if piece]


def _payload_length(rng: random.Random, capacity: int) -> int:
    roll = rng.random()
    if roll < 0.3:
        return rng.randint(0, 16)
    if roll < 0.6:
        return rng.randint(0, 300)
    if roll < 0.7:  # bodies around one and two full COBS blocks (254 bytes)
        return max(0, rng.choice((247, 501)) + rng.randint(-3, 3))
    if roll < 0.85:  # encoded frames around the receive buffer's capacity
        return max(0, capacity - 7 + rng.randint(-6, 2))
    return rng.randint(0, capacity)


def random_frame(rng: random.Random, capacity: int) -> Frame:
    """A frame of any message type (or an unknown type byte) with a random seq and payload."""
    seq = rng.randrange(0x10000)
    types = list(MessageType)
    frame_type = rng.choice(types) if rng.random() < 0.9 else rng.randrange(256)
    length = _payload_length(rng, capacity)
    if frame_type == MessageType.HELLO_REQUEST:
        payload = b""
    elif frame_type == MessageType.HELLO:
        payload = random_hello(rng).to_payload()
    elif frame_type == MessageType.INFER_RESULT:
        count = rng.randint(1, 16)
        size = max(0, length - 3 * count) // count
        payload = InferReply(codes=tuple(_payload_bytes(rng, size) for _ in range(count)),
                             ticks=tuple(rng.randrange(2 ** rng.choice((8, 24, 64))) for _ in range(count))).to_payload()
    elif frame_type == MessageType.PROFILE_RESULT:
        payload = ProfileReply(code=_payload_bytes(rng, max(0, length - 20)),
                               stage_ticks=tuple(rng.randrange(2**40) for _ in range(rng.randint(0, 8)))).to_payload()
    elif frame_type == MessageType.ERROR:
        payload = ErrorReply(code=rng.choice([*ErrorCode, rng.randrange(0x10000)]),
                             text=rng.randbytes(length // 2).decode("latin-1")).to_payload()
    else:
        payload = _payload_bytes(rng, length)
    return Frame(type=int(frame_type), seq=seq, payload=payload)


def random_hello(rng: random.Random) -> Hello:
    u16, u32 = (lambda: rng.randrange(0x10000)), (lambda: rng.randrange(2**32))
    return Hello(protocol_version=rng.randrange(256), node_id=rng.randrange(256), model_hash=rng.randbytes(8),
                 input_h=u16(), input_w=u16(), code_len=u16(), code_bits=rng.randrange(256), code_bytes=u16(),
                 macs=u32(), clock_hz=u32(), timer_hz=u32(), timer_kind=rng.choice(list(TimerKind)),
                 flash_used=u32(), ram_used=u32(), stack_size=u32(), max_input_bytes=u32(),
                 max_batch=rng.randrange(256), dsp_kernels=rng.random() < 0.5, board="".join(chr(rng.randrange(32, 127)) for _ in range(rng.randint(0, 40))))


def _ends_with_full_block(encoded: bytes) -> bool:
    """Whether the last COBS block of ``encoded`` (no delimiter) is a full 0xFF block."""
    index = last = 0
    while index < len(encoded):
        last = encoded[index]
        index += last
    return last == 0xFF


def _non_minimal_frame(rng: random.Random) -> tuple[bytes, Frame]:
    """A frame whose body ends in a zero-free run of 254 bytes, encoded as the firmware's
    streaming encoder writes it: the full block, then an empty block (0x01), then 0x00."""
    while True:
        frame = Frame(type=rng.randrange(1, 256), seq=rng.randrange(0x101, 0x10000),
                      payload=rng.randbytes(247).translate(_NO_ZERO))
        wire = encode_frame(frame)[:-1]
        if frame.seq & 0xFF and _ends_with_full_block(wire):
            return wire + b"\x01\x00", frame


def frame_input(rng: random.Random, capacity: int) -> FrameInput:
    """One input of a kind drawn from: valid, resync (garbage, delimiter, frame), a mutated
    frame (flip, drop, insert, truncate, duplicate), splice (two frames, lost delimiter),
    overlong, random bytes, short (a few COBS bytes), non-minimal COBS."""
    roll = rng.random()
    frame = random_frame(rng, capacity)
    wire = encode_frame(frame)
    if roll < 0.10:
        return FrameInput("valid", wire, (frame,))
    if roll < 0.15:
        return FrameInput("resync", rng.randbytes(rng.randint(0, 40)) + b"\x00" + wire, (frame,))
    if roll < 0.65:
        kind = rng.choice(list(MUTATIONS))
        return FrameInput(kind, mutate(rng, wire[:-1], kind) + b"\x00", (frame,))
    if roll < 0.70:
        other = random_frame(rng, capacity)
        return FrameInput("splice", wire[:-1] + encode_frame(other), (frame, other))
    if roll < 0.75:
        big = Frame(frame.type, frame.seq, _payload_bytes(rng, capacity + rng.randint(0, 600)))
        return FrameInput("overlong", encode_frame(big), (big,))
    if roll < 0.85:
        return FrameInput("random", rng.randbytes(rng.randint(0, capacity + 50)) + b"\x00", ())
    if roll < 0.97:
        return FrameInput("short", bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 12))) + b"\x00", ())
    non_minimal, frame = _non_minimal_frame(rng)
    return FrameInput("non-minimal-cobs", non_minimal, (frame,))


def frame_corpus(seed: int, count: int, capacity: int) -> list[FrameInput]:
    rng = random.Random(seed)
    return [frame_input(rng, capacity) for _ in range(count)]


BAD_FRAME, FRAME_TOO_LONG = int(ErrorCode.BAD_FRAME), int(ErrorCode.FRAME_TOO_LONG)


def expected_receive(piece: bytes, capacity: int) -> Frame | int:
    """What ``hil_receive_frame`` must return for one piece, by the host's decoder: the frame,
    or HIL_ERR_FRAME_TOO_LONG / HIL_ERR_BAD_FRAME."""
    if len(piece) > capacity:
        return FRAME_TOO_LONG
    try:
        return decode_frame(piece)
    except ProtocolError:
        return BAD_FRAME


def _show(data: bytes, limit: int = 48) -> str:
    """Input bytes for a report: hex, cut after ``limit`` bytes."""
    return f"input {data[:limit].hex()}" + (f"... ({len(data)} bytes)" if len(data) > limit else "")


@dataclass
class Tally:
    """Outcome counts of one parser over a corpus, in the order given (zeros included);
    ``findings`` holds the first examples of each outcome in ``must_be_zero`` that happened."""

    inputs: int
    outcomes: tuple[str, ...]
    must_be_zero: tuple[str, ...]
    counts: Counter[str] = field(default_factory=Counter)
    findings: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts.update(dict.fromkeys(self.outcomes + self.must_be_zero, 0))

    def finding(self, outcome: str, example: str) -> None:
        assert outcome in self.must_be_zero, outcome
        self.counts[outcome] += 1
        examples = self.findings.setdefault(outcome, [])
        if len(examples) < 5:
            examples.append(example)


DAMAGED_ACCEPTED = "accepted a damaged frame"
HOST_ACCEPTED = "accepted, identical to the frame sent"


def host_decode_tally(corpus: list[FrameInput]) -> Tally:
    """Every piece through decode_message: accepted only if it is one of the frames sent (and
    re-encodes to itself), else ProtocolError; any other exception is a finding."""
    tally = Tally(len(corpus), ("pieces decoded", HOST_ACCEPTED, "rejected: damaged frame (COBS, length or CRC)",
                                "rejected: intact frame, unknown type or bad payload"),
                  (DAMAGED_ACCEPTED, "re-encoding differs", "crashed (not ProtocolError)"))
    for index, item in enumerate(corpus):
        where = f"input #{index} ({item.kind})"
        for piece in item.pieces():
            tally.counts["pieces decoded"] += 1
            try:
                seq, message = decode_message(piece + b"\x00")
            except ProtocolError:
                try:
                    frame = decode_frame(piece)
                except ProtocolError:
                    tally.counts["rejected: damaged frame (COBS, length or CRC)"] += 1
                    continue
                if frame not in item.sent:
                    tally.finding(DAMAGED_ACCEPTED, f"{where}: {_show(piece)}")
                else:
                    tally.counts["rejected: intact frame, unknown type or bad payload"] += 1
                continue
            except Exception as exc:  # the finding this tally exists for
                tally.finding("crashed (not ProtocolError)", f"{where}: {_show(piece)}: {type(exc).__name__}: {exc}")
                continue
            if decode_frame(piece) not in item.sent:
                tally.finding(DAMAGED_ACCEPTED, f"{where}: {_show(piece)}")
            elif decode_message(encode_message(message, seq)) != (seq, message):
                tally.finding("re-encoding differs", f"{where}: {_show(piece)}")
            else:
                tally.counts[HOST_ACCEPTED] += 1
    return tally


def build_frame_harness(out_dir: Path) -> Path:
    """Compile fuzz_protocol.c with the firmware's protocol.c under ASan + UBSan."""
    exe = out_dir / "fuzz_protocol"
    cmd = ["gcc", "-std=c11", "-O1", "-g", *SANITIZER_FLAGS, "-Wall", "-Wextra", "-Werror",
           f"-I{FIRMWARE_SRC}", str(FRAME_HARNESS_SOURCE), str(FIRMWARE_SRC / "protocol.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


@dataclass(frozen=True)
class HarnessRun:
    returncode: int
    results: list[Frame | int]  # one per hil_receive_frame call: the frame or the error status
    stderr: str


def run_frame_harness(exe: Path, stream: bytes, capacity: int, *extra: str) -> HarnessRun:
    done = subprocess.run([str(exe), str(capacity), *extra], input=stream, capture_output=True,
                          env={**os.environ, **SANITIZER_ENV}, check=False)
    return HarnessRun(done.returncode, list(_harness_records(done.stdout)), done.stderr.decode(errors="replace"))


def _harness_records(out: bytes) -> Iterator[Frame | int]:
    index = 0
    while index < len(out):
        status = out[index]
        index += 1
        if status:
            yield status
            continue
        if index + 7 > len(out):  # the harness stopped inside a record (its stderr says why)
            return
        frame_type, seq, length = struct.unpack_from("<BHI", out, index)
        index += 7
        yield Frame(frame_type, seq, out[index:index + length])
        index += length


FIRMWARE_RECEIVED = "frames received (hil_receive_frame calls)"
FIRMWARE_ACCEPTED = "accepted, equal to the host decoder's frame"
FIRMWARE_BAD = "rejected: BAD_FRAME (the host decoder: ProtocolError)"
FIRMWARE_TOO_LONG = "rejected: FRAME_TOO_LONG (longer than the buffer)"
FIRMWARE_DIFFERS = "results differ from the host decoder"


def firmware_tally(exe: Path, corpus: list[FrameInput], capacity: int) -> Tally:
    """The whole corpus as one stream through the sanitized receiver, each result compared with
    :func:`expected_receive`; a sanitizer report or failed invariant is a finding."""
    run = run_frame_harness(exe, b"".join(item.stream for item in corpus), capacity)
    tally = Tally(len(corpus), (FIRMWARE_RECEIVED, FIRMWARE_ACCEPTED, FIRMWARE_BAD, FIRMWARE_TOO_LONG),
                  (FIRMWARE_DIFFERS, DAMAGED_ACCEPTED, "sanitizer or invariant findings"))
    if run.returncode != 0 or "runtime error" in run.stderr or "Sanitizer" in run.stderr:
        stopped = re.search(r"stopped at input byte (\d+)", run.stderr)
        where = "input unknown"
        if stopped:
            index = bisect.bisect_left(list(itertools.accumulate(len(item.stream) for item in corpus)),
                                       int(stopped.group(1)))
            where = f"input #{index} ({corpus[index].kind}): {_show(corpus[index].stream)}"
        report = "; ".join(line.strip() for line in run.stderr.splitlines()
                           if line.startswith(("fuzz_protocol:", "SUMMARY:")) or "ERROR:" in line or "runtime error" in line)
        tally.finding("sanitizer or invariant findings", f"{where}: exit {run.returncode}: {report}")
    expected = [(f"input #{index} ({item.kind})", item, piece, expected_receive(piece, capacity))
                for index, item in enumerate(corpus) for piece in item.pieces()]
    tally.counts[FIRMWARE_RECEIVED] = len(run.results)
    if len(run.results) != len(expected):
        tally.finding(FIRMWARE_DIFFERS, f"{len(run.results)} results for {len(expected)} pieces")
    for (where, item, piece, want), got in zip(expected, run.results):
        if got != want:
            tally.finding(FIRMWARE_DIFFERS, f"{where}: {_show(piece)}: firmware {got}, host {want}")
        elif isinstance(got, Frame):
            if got not in item.sent:
                tally.finding(DAMAGED_ACCEPTED, f"{where}: {_show(piece)}")
            else:
                tally.counts[FIRMWARE_ACCEPTED] += 1
        else:
            tally.counts[FIRMWARE_TOO_LONG if got == FRAME_TOO_LONG else FIRMWARE_BAD] += 1
    return tally


# ---------------------------------------------------------------------------------------------
# The Linux runner's requests
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunnerInput:
    kind: str
    stream: bytes
    sent: tuple[tuple[int, bytes], ...]  # (type, payload) of each request encoded into it


def random_array(rng: random.Random) -> np.ndarray:
    dtype = rng.choice(list(runner.DTYPE_CODES))
    if rng.random() < 0.3:
        shape: tuple[int, ...] = (rng.randint(0, 3), 14, 14)
    else:
        shape = tuple(rng.randint(0, 5) for _ in range(rng.randint(0, 4)))
    count = int(np.prod(shape))
    data = np.frombuffer(rng.randbytes(count * np.dtype(dtype).itemsize), dtype=dtype)
    return data.reshape(shape)


def crafted_array_header(rng: random.Random) -> bytes:
    """Array headers at the parser's limits: unknown dtype codes, many dimensions, a zero
    dimension beside huge ones, data shorter than the shape says."""
    code = rng.choice([*runner.DTYPE_NAMES, 0, rng.randrange(256)])
    roll = rng.random()
    if roll < 0.3:
        dims = [1] * rng.randint(0, 255)
    elif roll < 0.6:
        dims = [rng.choice((0, 1, 2**31, 2**32 - 1, rng.randrange(2**32))) for _ in range(rng.randint(1, 4))]
    else:
        dims = [rng.randint(0, 8) for _ in range(rng.randint(0, 4))]
    return bytes([code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + rng.randbytes(rng.randint(0, 64))


def random_request(rng: random.Random) -> tuple[int, bytes]:
    roll = rng.random()
    if roll < 0.55:
        payload = runner.encode_array(random_array(rng))
        return runner.INFER, payload + (rng.randbytes(rng.randint(1, 4)) if rng.random() < 0.1 else b"")
    if roll < 0.7:
        return runner.INFER, crafted_array_header(rng)
    if roll < 0.8:
        return runner.INFO, b""
    if roll < 0.85:
        return runner.QUIT, b""
    return rng.randrange(256), rng.randbytes(rng.randint(0, 16))


def runner_input(rng: random.Random) -> RunnerInput:
    """Valid request streams (1-3 requests), the same mutated, random bytes, absurd lengths."""
    sent = tuple(random_request(rng) for _ in range(rng.randint(1, 3)))
    stream = b"".join(runner.encode_frame(kind, payload) for kind, payload in sent)
    roll = rng.random()
    if roll < 0.25:
        return RunnerInput("valid", stream, sent)
    if roll < 0.85:
        kind = rng.choice(list(MUTATIONS))
        return RunnerInput(kind, mutate(rng, stream, kind), sent)
    if roll < 0.95:
        return RunnerInput("random", rng.randbytes(rng.randint(0, 64)), ())
    length = rng.choice((0, runner.MAX_FRAME_BYTES, runner.MAX_FRAME_BYTES + 1, 2**32 - 1, rng.randrange(2**32)))
    return RunnerInput("length", struct.pack(">I", length) + rng.randbytes(rng.randint(0, 16)), ())


def runner_corpus(seed: int, count: int) -> list[RunnerInput]:
    rng = random.Random(seed)
    return [runner_input(rng) for _ in range(count)]


def parse_requests(stream: bytes) -> Iterator[tuple[int, bytes, Any]]:
    """The runner's request parsing as ``serve`` does it: frames until the end of input, and the
    array of each INFER (no stray bytes after it). Yields (type, payload, array or None); a
    RunnerError ends a bad frame (and the stream) or rejects one INFER."""
    stream_io = io.BytesIO(stream)
    while (frame := runner.read_frame(stream_io)) is not None:
        kind, payload = frame
        array = None
        if kind == runner.INFER:
            array, end = runner.decode_array(payload)
            if end != len(payload):
                raise runner.RunnerError(f"{len(payload) - end} stray bytes after the INFER array")
        yield kind, payload, array


class EchoModel:
    """Stands in for ``hil_runner.Model`` in ``serve``: one zero code per sample (none for an
    empty batch, whatever its first dimension says)."""

    inferences = 0

    def infer(self, batch: Any) -> tuple[Any, Any]:
        samples = batch.shape[0] if batch.ndim and batch.size else 0
        return np.zeros((samples, 1), np.uint8), np.zeros(samples, np.int64)


def serve_replies(stream: bytes) -> tuple[int, list[int]]:
    """(status, reply types) of ``serve`` on ``stream``; it must not raise."""
    out = io.BytesIO()
    with contextlib.redirect_stderr(io.StringIO()):  # serve also writes each ERROR there
        status = runner.serve(EchoModel(), io.BytesIO(stream), out)  # type: ignore[arg-type]
    replies = io.BytesIO(out.getvalue())
    kinds = []
    while (frame := runner.read_frame(replies)) is not None:
        kinds.append(frame[0])
    return status, kinds


def runner_tally(corpus: list[RunnerInput]) -> Tally:
    """Each input through :func:`parse_requests` (only RunnerError may stop it) and ``serve``
    (must return 0 or 2 and write only RESULT / INFO / ERROR frames)."""
    tally = Tally(len(corpus), ("inputs parsed to their end", "inputs ended by a RunnerError", "requests accepted",
                                "requests accepted but altered (the format has no CRC)",
                                "serve returned 0 (end of input or QUIT)", "serve returned 2 (bad frame)"),
                  ("escaped as another exception", "serve raised", "serve misbehaved"))
    for index, item in enumerate(corpus):
        where = f"input #{index} ({item.kind})"
        parsed = 0
        try:
            for kind, payload, _ in parse_requests(item.stream):
                tally.counts["requests accepted"] += 1
                if (kind, payload) not in item.sent:
                    tally.counts["requests accepted but altered (the format has no CRC)"] += 1
                parsed += 1
            tally.counts["inputs parsed to their end"] += 1
        except runner.RunnerError:
            tally.counts["inputs ended by a RunnerError"] += 1
        except Exception as exc:  # the finding this tally exists for
            tally.finding("escaped as another exception",
                          f"{where}: {_show(item.stream)}: request {parsed}: {type(exc).__name__}: {exc}")
        try:
            status, kinds = serve_replies(item.stream)
        except Exception as exc:
            tally.finding("serve raised", f"{where}: {_show(item.stream)}: {type(exc).__name__}: {exc}")
            continue
        if status not in (0, 2) or set(kinds) - {runner.RESULT, runner.INFO, runner.ERROR}:
            tally.finding("serve misbehaved", f"{where}: {_show(item.stream)}: status {status}, replies {kinds}")
        tally.counts["serve returned 0 (end of input or QUIT)" if status == 0 else "serve returned 2 (bad frame)"] += 1
    return tally
