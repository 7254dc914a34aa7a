"""A simulated Nordic PPK2 on a pseudo-terminal, speaking the serial protocol ``ppk2-api`` uses.

For tests and dry runs without the instrument: the PPK2 driver (and ``ppk2-api`` under it) open
the pseudo-terminal's path like a real ``/dev/ttyACM0`` and go through their real code paths:
command bytes, the calibration metadata text, 4-byte little-endian samples.

Protocol (as implemented by ppk2-api 0.9 after Nordic's nRF Connect Power Profiler):
- host -> device opcodes: GET_META_DATA 0x19; REGULATOR_SET 0x0d + 2 bytes; SET_POWER_MODE
  0x11 + 1; DEVICE_RUNNING_SET 0x0c + 1; AVERAGE_START 0x06; AVERAGE_STOP 0x07; RESET 0x20;
  SPIKE_FILTERING_ON/OFF 0x15/0x16; RANGE_SET 0x08 + 1.
- metadata: ``key: value`` lines ending with ``END`` (R0..R4 shunt resistances, GS/GI/O/S/I/UG
  gains and offsets per range, HW, IA).
- a sample: uint32 little endian; bits 0-13 ADC value, 14-16 current range, 24-31 logic inputs.
  The current is ``adc * 4 * (1.8 / 163840) / R[range]`` amperes with unit gains and zero
  offsets, which this simulator's metadata declares.

Two ways to serve samples: a recording given up front (streamed once the host starts measuring),
or live (``live=True``): samples are appended with :meth:`PPK2Simulator.feed` while the host
measures, and streamed as they come. :class:`SimulatedPPK2Meter` is a meter made of a live
simulator and the real :class:`~harness.measure.meters.ppk2.PPK2Meter` reading it: a run on an
emulated board feeds it the trace :mod:`harness.measure.meters.synth` draws from the board's
inference windows. Closing the simulator hangs up the pseudo-terminal, as unplugging a PPK2 does.
"""
from __future__ import annotations

import os
import select
import threading
import time
import tty
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from harness.core.errors import MeasurementError
from harness.measure.meters import Meter, Trace

if TYPE_CHECKING:
    from harness.measure.meters.ppk2 import PPK2Meter

ADC_MULT = 1.8 / 163840
SHUNT_OHMS = {0: 1031.64, 1: 101.65, 2: 10.15, 3: 0.94, 4: 0.043}
_COMMAND_LENGTHS = {0x19: 1, 0x0D: 3, 0x11: 2, 0x0C: 2, 0x06: 1, 0x07: 1, 0x20: 1, 0x15: 1, 0x16: 1, 0x08: 2}


def range_max_current_a(current_range: int) -> float:
    return 0x3FFF * 4 * ADC_MULT / SHUNT_OHMS[current_range]


def current_lsb_a(current_range: int) -> float:
    """Resolution of one ADC step in a range (4.33 uA in range 2)."""
    return 4 * ADC_MULT / SHUNT_OHMS[current_range]


def range_for(current_a: float) -> int:
    """The most sensitive range that holds ``current_a`` (range 4 for anything larger)."""
    return next((r for r in (0, 1, 2, 3) if current_a <= range_max_current_a(r)), 4)


def encode_samples(current_a: np.ndarray, logic: np.ndarray | None = None,
                   current_range: int | None = None) -> bytes:
    """Sample words for the given currents: a fixed ``current_range``, or per sample the most
    sensitive range that holds the current (as the PPK2's auto-ranging does)."""
    current = np.asarray(current_a, dtype=np.float64)
    if np.any(current < 0):
        raise MeasurementError("the PPK2 simulator encodes non-negative currents only")
    if current_range is None:
        ranges = np.full(current.shape, 4, dtype=np.int64)
        for r in (3, 2, 1, 0):
            ranges[current <= range_max_current_a(r)] = r
    else:
        if np.any(current > range_max_current_a(current_range)):
            raise MeasurementError(f"current above range {current_range}'s maximum {range_max_current_a(current_range)} A")
        ranges = np.full(current.shape, current_range, dtype=np.int64)
    shunts = np.array([SHUNT_OHMS[r] for r in range(5)])[ranges]
    adc = np.clip(np.rint(current * shunts / (4 * ADC_MULT)), 0, 0x3FFF).astype(np.uint32)
    bits = np.zeros(current.shape, dtype=np.uint32) if logic is None else np.asarray(logic, dtype=np.uint32)
    words = adc | (ranges.astype(np.uint32) << 14) | ((bits & 0xFF) << 24)
    return words.astype("<u4").tobytes()


def metadata_text() -> str:
    lines = ["Calibrated: 0"]
    lines += [f"R{r}: {SHUNT_OHMS[r]}" for r in range(5)]
    for key, value in (("GS", 0), ("GI", 1), ("O", 0), ("S", 0), ("I", 0), ("UG", 1)):
        lines += [f"{key}{r}: {value}" for r in range(5)]
    lines += ["HW: 9173", "IA: 56", "END"]
    return "\n".join(lines) + "\n"


class PPK2Simulator:
    """Serves samples on a pseudo-terminal once the host sends AVERAGE_START.

    ``port`` is the path to open. ``chunk_samples`` samples are written per write; the stream
    stops at AVERAGE_STOP, or when the recording is exhausted (``wait_sent``); a ``live``
    simulator waits for more samples (:meth:`feed`) instead."""

    def __init__(self, samples: bytes = b"", chunk_samples: int = 1000, live: bool = False) -> None:
        if len(samples) % 4:
            raise MeasurementError("PPK2 samples are 4 bytes each")
        self._samples = bytearray(samples)
        self._live = live
        self._fed = threading.Condition()
        self._offset = 0  # bytes written to the port so far
        self._chunk = chunk_samples * 4
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self.commands: list[bytes] = []
        self._streaming = threading.Event()
        self._closed = threading.Event()
        self._sent = threading.Event()
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._serve, name="ppk2-sim", daemon=True)
        self._writer: threading.Thread | None = None
        self._reader.start()

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            view = memoryview(data)
            while view and not self._closed.is_set():
                try:
                    n = os.write(self._master, view)
                except BlockingIOError:  # the host has not read yet: wait until it does
                    select.select([], [self._master], [], 0.05)
                    continue
                except OSError:
                    return
                view = view[n:]

    def feed(self, samples: bytes) -> None:
        """Append sample words to a live simulator's stream."""
        if not self._live:
            raise MeasurementError("feed() needs a live simulator (PPK2Simulator(live=True))")
        if len(samples) % 4:
            raise MeasurementError("PPK2 samples are 4 bytes each")
        with self._fed:
            self._samples += samples
            self._sent.clear()
            self._fed.notify_all()

    def _stream(self) -> None:
        while self._streaming.is_set() and not self._closed.is_set():
            with self._fed:
                if self._offset >= len(self._samples):
                    self._sent.set()
                    if not self._live:
                        return
                    self._fed.wait(0.05)
                    continue
                chunk = bytes(self._samples[self._offset:self._offset + self._chunk])
            self._write(chunk)
            with self._fed:
                self._offset += len(chunk)

    def _handle(self, command: bytes) -> None:
        self.commands.append(command)
        opcode = command[0]
        if opcode == 0x19:
            self._write(metadata_text().encode())
        elif opcode == 0x06 and not self._streaming.is_set():
            if not self._live:
                self._offset = 0  # a recording plays from its start at every AVERAGE_START
            self._streaming.set()
            self._writer = threading.Thread(target=self._stream, name="ppk2-sim-stream", daemon=True)
            self._writer.start()
        elif opcode == 0x07:
            self._streaming.clear()

    def _serve(self) -> None:
        pending = b""
        while not self._closed.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                pending += os.read(self._master, 256)
            except BlockingIOError:
                continue
            except OSError:
                return
            while pending:
                length = _COMMAND_LENGTHS.get(pending[0], 1)
                if len(pending) < length:
                    break
                self._handle(pending[:length])
                pending = pending[length:]

    def wait_sent(self, timeout: float = 10.0) -> bool:
        """Wait until every sample recorded or fed so far has been written to the port."""
        return self._sent.wait(timeout)

    def close(self) -> None:
        """Stop serving and close both ends: the host's port hangs up (reads fail with EIO)."""
        self._closed.set()
        self._streaming.clear()
        with self._fed:
            self._fed.notify_all()
        self._reader.join()
        if self._writer is not None:
            self._writer.join()
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PPK2Simulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimulatedPPK2Meter(Meter):
    """A PPK2 stand-in for emulated boards: a live :class:`PPK2Simulator` read by the real
    :class:`~harness.measure.meters.ppk2.PPK2Meter` (so ``ppk2-api`` decodes every sample), fed
    currents and marker bits with :meth:`feed`. Currents are encoded in one fixed range (the
    most sensitive that holds ``max_current_a``), so the PPK2's auto-range spike filter never
    touches them. Its traces and figures say "simulated meter"."""

    name = "ppk2"
    nominal_rate_hz = 100_000.0
    logic_inputs = 8
    input_name = "D{}"
    simulated = True

    def __init__(self, voltage_mv: int, max_current_a: float, mode: str = "source", synthesis: str = "") -> None:
        from harness.measure.meters.ppk2 import PPK2Meter

        self.voltage_mv, self.mode, self.synthesis = voltage_mv, mode, synthesis
        self.current_range = range_for(max_current_a)
        self.simulator = PPK2Simulator(live=True)
        self.meter: PPK2Meter = PPK2Meter(self.simulator.port, voltage_mv=voltage_mv, mode=mode,
                                          stall_timeout_s=None)  # silent between batches: fed, not clocked
        self._fed = 0

    def describe(self) -> str:
        return (f"simulated meter: PPK2 protocol simulator on a pseudo-terminal, read through ppk2-api "
                f"({self.mode} meter {self.voltage_mv / 1000:g} V, {self.nominal_rate_hz / 1000:g} kS/s, "
                f"current range {self.current_range})")

    def feed(self, current_a: np.ndarray, logic: np.ndarray) -> None:
        self.simulator.feed(encode_samples(current_a, logic, current_range=self.current_range))
        self._fed += len(current_a)

    def start(self) -> None:
        self.meter.start()

    def check(self) -> None:
        self.meter.check()

    def stop(self, timeout_s: float = 30.0) -> Trace:
        """Wait until every fed sample has come through ppk2-api, then stop the meter."""
        deadline = time.monotonic() + timeout_s
        while self.meter.samples_received() < self._fed:
            self.meter.check()
            if time.monotonic() > deadline:
                raise MeasurementError(f"simulated PPK2: {self.meter.samples_received()} of {self._fed} fed samples "
                                       f"arrived within {timeout_s:g} s")
            time.sleep(0.005)
        trace = self.meter.stop()
        return replace(trace, sources=(self.describe(), *((self.synthesis,) if self.synthesis else ()), *trace.sources),
                       meta={**trace.meta, "simulated": True})

    def close(self) -> None:
        try:
            self.meter.close()
        finally:
            self.simulator.close()
