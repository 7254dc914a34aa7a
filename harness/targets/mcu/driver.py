"""Host side of a microcontroller node: handshake, model-hash check, PING and INFER with retries.

The same class drives a real board (``/dev/ttyACM0``, ``rfc2217://``) and an emulated one
(``socket://`` to QEMU); only the tick conversion differs, and it is told which applies.

Recovery on a faulty link. The device's reply to each request echoes the request's sequence
number, and every attempt gets a new one. Requests are pure functions of their payload (INFER,
PING, HELLO), so a valid reply to *any* attempt of the current request is accepted, however
late; replies to earlier requests are skipped. Every retry starts with a bare delimiter, which
ends whatever fragment of an earlier attempt the device still holds, so a retry never fails on
debris. The device cannot tell whose frame it could not decode (its error carries no sequence
number): such an error ends the first attempt at once (nothing else can be on the line), and a
retry's second one (the first may be the debris its delimiter flushed). A link that breaks
(reset, reconnect) is reopened. Timeouts follow the device: each attempt waits at least
``reply_timeout`` and at least ``TIMEOUT_PER_ROUND_TRIP`` times the slowest recent round trip,
doubling on every retry, so a loaded host does not turn slow replies into failures.

Batches. One INFER frame carries up to ``batch_size`` samples (the device times each on its
own), so framing, CRC and the round trip are paid once per batch. A batch gets one attempt:
if it fails, it is split in half and each half sent on its own (a single sample gets every
retry), and later batches start at the size that last worked, doubling again after
``GROW_BATCH_AFTER`` clean ones. A long frame on a noisy link thus shrinks to what the link
carries instead of failing again and again.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence, TypeVar

from harness.core.errors import DeviceError, ProtocolError
from harness.targets.mcu.protocol import (
    PROTOCOL_VERSION,
    AnyMessage,
    ErrorCode,
    ErrorReply,
    Hello,
    HelloRequest,
    Infer,
    InferReply,
    Ping,
    Pong,
    Profile,
    ProfileReply,
    TimerKind,
    decode_message,
    encode_message,
)
from harness.transports import Transport, TRANSPORTS

DEFAULT_REPLY_TIMEOUT_SECONDS = 2.0
DEFAULT_BANNER_TIMEOUT_SECONDS = 2.0
DEFAULT_MAX_RETRIES = 3
TIMEOUT_PER_ROUND_TRIP = 5.0  # an attempt waits at least this many times the slowest recent round trip
MAX_REPLY_TIMEOUT_SECONDS = 120.0
RECENT_ROUND_TRIPS = 16
FIRST_REQUEST_SEQ = 1  # seq 0 is the device's boot banner, 0xFFFF its "unknown seq"
LAST_REQUEST_SEQ = 0xFFFE
RESYNC = b"\x00"  # a bare delimiter ends any partial frame the device holds; it ignores empties
DEFAULT_MAX_BATCH = 16  # samples per INFER frame, at most (the firmware's HIL_MAX_BATCH caps it too)
GROW_BATCH_AFTER = 8  # clean batches before a batch shrunk by a failure may double again


ReplyT = TypeVar("ReplyT", Hello, Pong, InferReply, ProfileReply)


class NoReply(DeviceError):
    """No valid reply to a request after all its attempts."""


# ---------------------------------------------------------------------------------------------
# Tick conversion (pure)
# ---------------------------------------------------------------------------------------------

EMULATED_LABEL = "instructions (emulated, not cycles)"


@dataclass(frozen=True)
class DeviceWork:
    """Device timer ticks converted to what they measure, with an honest label."""

    ticks: int
    count: float  # instructions (emulated) or CPU cycles (real board)
    unit: str  # "instructions" or "cycles"
    label: str  # shown next to the figure in results
    emulated: bool
    microseconds: float | None  # real boards only: emulated virtual time is no board's time
    resolution: float  # count per tick: the quantisation of ``count``


def ticks_to_work(
    ticks: int, *, timer_hz: int, clock_hz: int, timer_kind: TimerKind, icount_shift: int | None
) -> DeviceWork:
    """Convert device ticks.

    Emulated (``icount_shift`` given): QEMU's virtual clock advances 2**shift ns per executed
    instruction and the timer ticks ``timer_hz`` times per virtual second, so
    instructions = ticks * 1e9 / (timer_hz * 2**shift), exactly; the result is quantised to one
    tick, i.e. 1e9 / (timer_hz * 2**shift) instructions.
    Real board: cycles = ticks * clock_hz / timer_hz (DWT: ticks are cycles), and the time is
    ticks / timer_hz.
    """
    if icount_shift is not None:
        per_tick = Fraction(10**9, timer_hz * 2**icount_shift)
        return DeviceWork(
            ticks=ticks, count=float(ticks * per_tick), unit="instructions", label=EMULATED_LABEL,
            emulated=True, microseconds=None, resolution=float(per_tick),
        )
    per_tick = Fraction(clock_hz, timer_hz)
    source = "DWT CYCCNT" if timer_kind is TimerKind.DWT else timer_kind.name
    return DeviceWork(
        ticks=ticks, count=float(ticks * per_tick), unit="cycles", label=f"cycles ({source})",
        emulated=False, microseconds=float(Fraction(ticks * 10**6, timer_hz)),
        resolution=float(per_tick),
    )


# ---------------------------------------------------------------------------------------------
# Target
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferResult:
    """One inference: packed code bytes and device ticks, plus what it cost on the link."""

    code: bytes
    ticks: int
    attempts: int = 1  # 1 = no retry
    round_trip_seconds: float = 0.0  # host wall time from first send to accepted reply
    wire_bytes_sent: int = 0  # framing and retries included
    wire_bytes_received: int = 0


@dataclass(frozen=True)
class ProfileResult:
    """One inference timed stage by stage (see quant_models.codegen.model_stages)."""

    code: bytes
    stage_ticks: tuple[int, ...]


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` whole numbers that differ by at most one and sum to it (the first
    ones get the remainder): a batch's wire bytes shared among its samples."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


@dataclass
class LinkStats:
    """Running counts for one target's link, framing included."""

    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    retries: int = 0
    bad_frames: int = 0  # replies that failed COBS/CRC/length checks
    timeouts: int = 0  # attempts with no reply in time
    damaged_requests: int = 0  # device reported a frame it could not decode (ours or debris)
    stale_replies: int = 0  # replies to earlier requests, skipped
    late_replies: int = 0  # replies to an earlier attempt of the request, accepted
    reconnects: int = 0  # the link broke and was reopened
    batches: int = 0  # INFER frames answered
    batch_splits: int = 0  # batches split in half after a failed attempt


class McuTarget:
    """A Cortex-M node speaking the hilbench frame protocol over a transport URL."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        expected_model_hash: bytes | None = None,
        icount_shift: int | None = None,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT_SECONDS,
        banner_timeout: float = DEFAULT_BANNER_TIMEOUT_SECONDS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_batch: int = DEFAULT_MAX_BATCH,
        transport: Transport | None = None,
    ) -> None:
        """``icount_shift``: the QEMU -icount shift for an emulated board, None for a real one.

        ``expected_model_hash``: the 8-byte model hash the firmware must report; None skips the
        check (for tools that only inspect a device).
        """
        self.url = url
        self.name = name or url
        self.expected_model_hash = expected_model_hash
        self.icount_shift = icount_shift
        self.reply_timeout = reply_timeout
        self.banner_timeout = banner_timeout
        self.max_retries = max_retries
        self.max_batch = max(1, max_batch)
        self._batch = self.max_batch
        self._clean_batches = 0
        self._resync = False  # the last attempt failed: the device may hold a fragment of it
        self._transport = transport if transport is not None else TRANSPORTS.create(url)
        self._hello: Hello | None = None
        self._next_seq = FIRST_REQUEST_SEQ
        self._stats = LinkStats()
        self._round_trips: deque[float] = deque(maxlen=RECENT_ROUND_TRIPS)

    # -- connection --------------------------------------------------------------------------

    def connect(self) -> Hello:
        """Open the link, wait for the boot banner, ask HELLO, and check the firmware.

        The STM32 UART model drops bytes that arrive before the firmware enables the UART, so
        nothing is sent until the banner arrived or ``banner_timeout`` passed (a real board
        that booted long ago sends no banner; it answers the HELLO request).
        """
        self._transport.open()
        try:
            self._await_banner()
            self._transport.write_frame(RESYNC)
            hello = self._exchange(HelloRequest(), Hello)[0]
            self._check_firmware(hello)
        except BaseException:
            self._transport.close()
            raise
        self._hello = hello
        return hello

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "McuTarget":
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _await_banner(self) -> Hello | None:
        deadline = time.monotonic() + self.banner_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            wire = self._transport.read_frame(remaining)
            if wire is None:
                break
            try:
                _, message = decode_message(wire)
            except ProtocolError:
                continue  # line noise before the firmware came up
            if isinstance(message, Hello):
                return message
        return None

    def _check_firmware(self, hello: Hello) -> None:
        if hello.protocol_version != PROTOCOL_VERSION:
            raise DeviceError(
                f"device {self.name} ({self.url}) speaks protocol version {hello.protocol_version}, "
                f"host speaks {PROTOCOL_VERSION}; rebuild and reflash the firmware"
            )
        if self.expected_model_hash is not None and hello.model_hash != self.expected_model_hash:
            raise DeviceError(
                f"device {self.name} ({self.url}, board {hello.board}) runs model "
                f"{hello.model_hash.hex()}, expected {self.expected_model_hash.hex()}: refusing to "
                "benchmark firmware built for a different model; rebuild and redeploy it"
            )
        if hello.input_bytes > hello.max_input_bytes:
            raise DeviceError(
                f"device {self.name} ({self.url}): the model takes {hello.input_bytes} input bytes "
                f"but the firmware's receive buffer holds {hello.max_input_bytes}; rebuild it "
                f"with build_firmware(..., max_input_bytes={hello.input_bytes})"
            )
        if self.icount_shift is not None and hello.timer_kind is TimerKind.DWT:
            raise DeviceError(
                f"device {self.name} ({self.url}) is emulated but times with DWT CYCCNT, which "
                "QEMU does not implement (it reads 0); build emulated firmware with SysTick"
            )

    @property
    def hello(self) -> Hello:
        """The device's HELLO from :meth:`connect`."""
        if self._hello is None:
            raise DeviceError(f"device {self.name} ({self.url}) is not connected")
        return self._hello

    @property
    def stats(self) -> LinkStats:
        """Link counters, with byte counts taken from the transport (framing included)."""
        self._stats.bytes_sent = self._transport.bytes_sent
        self._stats.bytes_received = self._transport.bytes_received
        return self._stats

    # -- requests ----------------------------------------------------------------------------

    def ping(self, data: bytes = b"hilbench") -> float:
        """Round trip of a PING carrying ``data``, in seconds; DeviceError if the echo differs."""
        start = time.monotonic()
        pong, _ = self._exchange(Ping(data), Pong)
        elapsed = time.monotonic() - start
        if pong.data != data:
            raise DeviceError(f"device {self.name} ({self.url}) echoed {pong.data!r} to PING {data!r}")
        return elapsed

    @property
    def batch_size(self) -> int:
        """Most samples one INFER frame carries: the host's limit, the firmware's, and what its
        receive buffer holds."""
        hello = self.hello
        return max(1, min(self.max_batch, hello.max_batch, hello.max_input_bytes // hello.input_bytes))

    def infer(self, input: bytes) -> InferResult:
        """Run the node encoder on ``input``: packed code bytes and device timer ticks."""
        return self.infer_batch([input])[0]

    def infer_batch(self, inputs: Sequence[bytes]) -> list[InferResult]:
        """Run the node encoder on every input, in frames of up to :attr:`batch_size` samples;
        one result per input, in order."""
        for input in inputs:
            self._check_input(input)
        results: list[InferResult] = []
        while len(results) < len(inputs):
            size = min(self._batch, self.batch_size)
            chunk = [bytes(x) for x in inputs[len(results) : len(results) + size]]
            results += self._infer_chunk(chunk, [0] * len(chunk), [0] * len(chunk), 0)
        return results

    def _infer_chunk(self, chunk: list[bytes], carried_sent: list[int], carried_received: list[int],
                     tries: int) -> list[InferResult]:
        """One frame for ``chunk``; split in half if it fails (a lone sample gets every retry).
        ``carried_*``: each sample's share of the bytes its failed larger frames cost; ``tries``:
        attempts those frames made."""
        hello = self.hello
        sent, received = self._transport.bytes_sent, self._transport.bytes_received
        start = time.monotonic()
        try:
            reply, attempts = self._exchange(Infer(b"".join(chunk)), InferReply, units=len(chunk),
                                             attempts=None if len(chunk) == 1 else 1)
        except NoReply:
            if len(chunk) == 1:
                raise
            self._stats.batch_splits += 1
            half = len(chunk) // 2
            self._batch, self._clean_batches = half, 0
            lost_sent = [c + s for c, s in zip(carried_sent, split_evenly(self._transport.bytes_sent - sent, len(chunk)))]
            lost_received = [c + r for c, r in zip(carried_received,
                                                   split_evenly(self._transport.bytes_received - received, len(chunk)))]
            return (self._infer_chunk(chunk[:half], lost_sent[:half], lost_received[:half], tries + 1)
                    + self._infer_chunk(chunk[half:], lost_sent[half:], lost_received[half:], tries + 1))
        elapsed = time.monotonic() - start
        if len(reply.codes) != len(chunk) or any(len(code) != hello.code_bytes for code in reply.codes):
            raise ProtocolError(
                f"device {self.name} ({self.url}) returned {len(reply.codes)} codes of "
                f"{len(reply.codes[0]) if reply.codes else 0} bytes for {len(chunk)} inputs; its HELLO "
                f"says {hello.code_bytes} bytes each"
            )
        self._stats.batches += 1
        self._clean_batches += 1
        if self._clean_batches >= GROW_BATCH_AFTER and self._batch < self.max_batch:
            self._batch, self._clean_batches = min(self.max_batch, self._batch * 2), 0
        shares_sent = split_evenly(self._transport.bytes_sent - sent, len(chunk))
        shares_received = split_evenly(self._transport.bytes_received - received, len(chunk))
        return [
            InferResult(code=code, ticks=ticks, attempts=tries + attempts, round_trip_seconds=elapsed / len(chunk),
                        wire_bytes_sent=carried_sent[i] + shares_sent[i],
                        wire_bytes_received=carried_received[i] + shares_received[i])
            for i, (code, ticks) in enumerate(zip(reply.codes, reply.ticks))
        ]

    def profile(self, input: bytes) -> ProfileResult:
        """One inference on ``input`` timed stage by stage: the code and each stage's ticks."""
        hello = self.hello
        self._check_input(input)
        reply, _ = self._exchange(Profile(bytes(input)), ProfileReply)
        if len(reply.code) != hello.code_bytes:
            raise ProtocolError(f"device {self.name} ({self.url}) returned a {len(reply.code)}-byte code to "
                                f"PROFILE; its HELLO says {hello.code_bytes}")
        return ProfileResult(code=reply.code, stage_ticks=reply.stage_ticks)

    def _check_input(self, input: bytes) -> None:
        hello = self.hello
        if len(input) != hello.input_bytes:
            raise DeviceError(
                f"input of {len(input)} bytes for device {self.name}, whose model takes "
                f"{hello.input_h}x{hello.input_w} = {hello.input_bytes} bytes"
            )

    def work(self, ticks: int) -> DeviceWork:
        """``ticks`` from this device as instructions (emulated) or cycles and time (real)."""
        hello = self.hello
        return ticks_to_work(
            ticks, timer_hz=hello.timer_hz, clock_hz=hello.clock_hz,
            timer_kind=hello.timer_kind, icount_shift=self.icount_shift,
        )

    def _new_seq(self) -> int:
        seq = self._next_seq
        self._next_seq = FIRST_REQUEST_SEQ if seq >= LAST_REQUEST_SEQ else seq + 1
        return seq

    def attempt_timeout(self, attempt: int, units: int = 1) -> float:
        """How long attempt ``attempt`` (1 = first) of a request for ``units`` samples waits for
        its reply (recent round trips are kept per sample)."""
        floor = max(self.reply_timeout, TIMEOUT_PER_ROUND_TRIP * units * max(self._round_trips, default=0.0))
        return min(floor * 2 ** (attempt - 1), max(MAX_REPLY_TIMEOUT_SECONDS, self.reply_timeout))

    def _exchange(self, request: AnyMessage, reply_type: type[ReplyT], units: int = 1,
                  attempts: int | None = None) -> tuple[ReplyT, int]:
        """Send ``request`` (for ``units`` samples) until a valid reply to any of its attempts
        arrives, at most ``attempts`` times (default: 1 + max_retries); (reply, attempts)."""
        self._stats.requests += 1
        attempts = attempts if attempts is not None else self.max_retries + 1
        seqs: list[int] = []
        for attempt in range(1, attempts + 1):
            seq = self._new_seq()
            seqs.append(seq)
            wire = encode_message(request, seq)
            if attempt > 1:
                self._stats.retries += 1
            if self._resync:  # after any failed attempt: this request's, or a split batch's
                wire = RESYNC + wire
            sent_at = time.monotonic()
            if not self._send(wire):
                self._resync = True
                continue
            reply = self._await_reply(seqs, request, reply_type, self.attempt_timeout(attempt, units))
            self._resync = reply is None
            if reply is not None:
                # this attempt's round trip: a request's retries say nothing of the device's pace
                self._round_trips.append((time.monotonic() - sent_at) / units)
                return reply, attempt
        stats = self._stats
        raise NoReply(
            f"device {self.name} ({self.url}): no valid reply to {request.TYPE.name} after "
            f"{attempts} attempts (timeouts {stats.timeouts}, bad frames {stats.bad_frames}, "
            f"damaged requests {stats.damaged_requests}, reconnects {stats.reconnects} so far on "
            "this link); check the cable or the emulator, or raise the profile's "
            "transport.max_retries / transport.reply_timeout_s"
        )

    def _send(self, wire: bytes) -> bool:
        """Write a request; on a broken link, reopen it once and write again. False if the
        reopened link broke too (the attempt counts as failed)."""
        try:
            self._transport.write_frame(wire)
            return True
        except ProtocolError:
            raise
        except DeviceError:
            self._reconnect()
        try:
            self._transport.write_frame(RESYNC + wire)
            return True
        except ProtocolError:
            raise
        except DeviceError:
            return False

    def _reconnect(self) -> None:
        """Reopen a broken link (a reset USB serial device, a dropped TCP connection)."""
        self._stats.reconnects += 1
        self._transport.close()
        self._transport.open()

    def _await_reply(self, seqs: list[int], request: AnyMessage, reply_type: type[ReplyT],
                     timeout: float) -> ReplyT | None:
        """A valid reply to any attempt in ``seqs`` (the last is the current one), or None if
        the current attempt failed and should be retried."""
        deadline = time.monotonic() + timeout
        undecodable = 0  # device errors for frames it could not decode, during this attempt
        while True:
            try:
                wire = self._transport.read_frame(max(0.0, deadline - time.monotonic()))
            except ProtocolError:  # no delimiter for too long: a lost delimiter merged frames
                self._stats.bad_frames += 1
                return None
            except DeviceError:
                self._reconnect()
                return None
            if wire is None:
                self._stats.timeouts += 1
                return None
            try:
                reply_seq, message = decode_message(wire)
            except ProtocolError:
                self._stats.bad_frames += 1
                return None
            if isinstance(message, ErrorReply) and message.code in (ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LONG):
                # The device could not decode a frame: this attempt's request, or (after a
                # retry's delimiter) the fragment an earlier attempt left behind.
                self._stats.damaged_requests += 1
                undecodable += 1
                if undecodable >= (1 if len(seqs) == 1 else 2):
                    return None
                continue
            if reply_seq not in seqs:
                self._stats.stale_replies += 1
                continue
            if isinstance(message, ErrorReply):
                raise DeviceError(
                    f"device {self.name} ({self.url}) refused {request.TYPE.name}: "
                    f"{_error_name(message.code)}: {message.text}"
                )
            if not isinstance(message, reply_type):
                raise ProtocolError(
                    f"device {self.name} ({self.url}) answered {request.TYPE.name} with "
                    f"{message.TYPE.name}"
                )
            if reply_seq != seqs[-1]:
                self._stats.late_replies += 1
            return message


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"
