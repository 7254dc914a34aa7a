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
"""
from __future__ import annotations

import os
import select
import threading
import tty

import numpy as np

from harness.core.errors import MeasurementError

ADC_MULT = 1.8 / 163840
SHUNT_OHMS = {0: 1031.64, 1: 101.65, 2: 10.15, 3: 0.94, 4: 0.043}
_COMMAND_LENGTHS = {0x19: 1, 0x0D: 3, 0x11: 2, 0x0C: 2, 0x06: 1, 0x07: 1, 0x20: 1, 0x15: 1, 0x16: 1, 0x08: 2}


def range_max_current_a(current_range: int) -> float:
    return 0x3FFF * 4 * ADC_MULT / SHUNT_OHMS[current_range]


def current_lsb_a(current_range: int) -> float:
    """Resolution of one ADC step in a range (4.33 uA in range 2)."""
    return 4 * ADC_MULT / SHUNT_OHMS[current_range]


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
    """Serves recorded samples on a pseudo-terminal once the host sends AVERAGE_START.

    ``port`` is the path to open. ``chunk_samples`` samples are written per write; the stream
    stops at AVERAGE_STOP or when the recording is exhausted (``wait_sent``)."""

    def __init__(self, samples: bytes, chunk_samples: int = 1000) -> None:
        if len(samples) % 4:
            raise MeasurementError("PPK2 samples are 4 bytes each")
        self._samples = samples
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

    def _stream(self) -> None:
        for offset in range(0, len(self._samples), self._chunk):
            if not self._streaming.is_set() or self._closed.is_set():
                return
            self._write(self._samples[offset:offset + self._chunk])
        self._sent.set()

    def _handle(self, command: bytes) -> None:
        self.commands.append(command)
        opcode = command[0]
        if opcode == 0x19:
            self._write(metadata_text().encode())
        elif opcode == 0x06 and not self._streaming.is_set():
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
        """Wait until every recorded sample has been written to the port."""
        return self._sent.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        self._streaming.clear()
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
