"""Joulescope JS220/JS110 through the ``joulescope`` package (optional extra ``meters``), and
Joulescope recordings (JLS v2 files, through ``pyjls``, which ``joulescope`` depends on).

Live capture: ``joulescope`` opens the instrument, its driver streams current, voltage and the
general-purpose inputs GPI0/GPI1 into the package's :class:`StreamBuffer`; a stream process
(:class:`StreamCollector`) registered with the device copies every new sample out of that buffer
as it arrives. GPI0/GPI1 become bits 0/1 of the trace's ``logic`` (wire the firmware's marker
pin to a GPI input). The collector is the part that touches the package's data, and is tested
on a real StreamBuffer fed with synthesized driver messages; opening a device needs the
instrument (``joulescope.scan`` answers an empty list without one, which is tested too).

Recordings: :func:`read_jls` reads a JLS v2 file made by the Joulescope UI or ``joulescope``'s
recorder into a trace, so a capture made elsewhere can be aligned and integrated the same way.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.core.errors import ConfigError, DeviceError, MeasurementError
from harness.measure.meters import METERS, Meter, SpecError, Trace

if TYPE_CHECKING:
    from harness.config.profiles import DeviceProfile, MeterSpec

SAMPLING_FREQUENCIES = (1_000_000, 500_000, 200_000, 100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000)
"""The JS110/JS220 ``sampling_frequency`` settings (joulescope package, device parameters)."""

_FIELDS = ["current", "voltage", "current_lsb", "voltage_lsb"]  # current_lsb = GPI0, voltage_lsb = GPI1


class StreamCollector:
    """A ``joulescope`` stream process: copies every new sample of the device's StreamBuffer.

    ``stream_notify`` is called by the device for each chunk with the buffer; samples that were
    overwritten before being copied (the buffer wrapped) are counted in ``dropped``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.driver_active = True
        self._reset()

    def _reset(self) -> None:
        self._next: int | None = None
        self._first: int | None = None
        self._chunks: dict[str, list[np.ndarray]] = {f: [] for f in _FIELDS}
        self._offsets: list[float] = []  # host monotonic at a notification - meter time of its last sample
        self.dropped = 0
        self.rate_hz: float | None = None

    def start(self, stream_buffer: Any) -> None:
        with self._lock:
            self._reset()

    def stream_notify(self, stream_buffer: Any) -> bool:
        start, end = stream_buffer.sample_id_range
        if start is None:
            return False
        with self._lock:
            if self._next is None:
                self._next = self._first = start
            begin = max(self._next, start)
            if end <= begin:
                return False
            self.dropped += begin - self._next
            received_at = time.monotonic()
            data = stream_buffer.samples_get(begin, end, fields=_FIELDS)
            self.rate_hz = float(data["time"]["output_sampling_frequency"]["value"])
            assert self._first is not None
            self._offsets.append(received_at - (end - 1 - self._first) / self.rate_hz)
            for f in _FIELDS:
                self._chunks[f].append(np.array(data["signals"][f]["value"], copy=True))
            self._next = end
        return False  # keep streaming

    def stop(self) -> None:
        pass

    def trace(self, sources: tuple[str, ...] = ()) -> Trace:
        with self._lock:
            if self._first is None or self.rate_hz is None:
                raise MeasurementError("joulescope: no samples were streamed")
            if self.dropped:
                raise MeasurementError(f"joulescope: {self.dropped} samples were overwritten before they were "
                                       "read; raise buffer_duration")
            cols = {f: np.concatenate(self._chunks[f]) if self._chunks[f] else np.empty(0) for f in _FIELDS}
            n = len(cols["current"])
            logic = (cols["current_lsb"].astype(np.uint8) & 1) | ((cols["voltage_lsb"].astype(np.uint8) & 1) << 1)
            offsets = np.asarray(self._offsets)
            clock = ({"host_minus_meter_s": float(offsets.min()),
                      "clock_offset_uncertainty_s": float(np.percentile(offsets, 95) - offsets.min())}
                     if offsets.size else {})
            return Trace(meter="joulescope", t_s=np.arange(n) / self.rate_hz,
                         current_a=cols["current"].astype(np.float64), voltage_v=cols["voltage"].astype(np.float64),
                         rate_hz=self.rate_hz, logic=logic,
                         sources=(f"Joulescope via joulescope package, {self.rate_hz:g} samples/s, "
                                  "calibrated current and voltage", *sources),
                         meta={"first_sample_id": self._first, **clock})


@METERS.register
class JoulescopeMeter(Meter):
    """A Joulescope found by ``joulescope.scan`` (the first one, or the given serial number)."""

    name = "joulescope"
    nominal_rate_hz = 1_000_000.0
    logic_inputs = 2  # GPI0, GPI1
    input_name = "GPI{}"
    spec_fields = frozenset({"serial_number", "sample_rate_hz"})

    @classmethod
    def spec_errors(cls, spec: "MeterSpec", profile: "DeviceProfile") -> list[SpecError]:
        errors = super().spec_errors(spec, profile)
        if spec.sample_rate_hz is not None and spec.sample_rate_hz not in SAMPLING_FREQUENCIES:
            errors.append(("sample_rate_hz", f"a Joulescope samples at one of {list(SAMPLING_FREQUENCIES)} per second, "
                                             f"not {spec.sample_rate_hz:g}"))
        return errors

    @classmethod
    def from_spec(cls, spec: "MeterSpec", profile: "DeviceProfile") -> "JoulescopeMeter":
        rate = int(spec.sample_rate_hz) if spec.sample_rate_hz is not None else 1_000_000
        return cls(serial_number=spec.serial_number, sampling_frequency=rate, **spec.options)

    def describe(self) -> str:
        which = f" {self.serial_number}" if self.serial_number else ""
        return f"Joulescope{which}, {self.sampling_frequency / 1000:g} kS/s, its own voltage and current"

    def __init__(self, serial_number: str | None = None, sampling_frequency: int = 1_000_000,
                 buffer_duration_s: float = 30.0) -> None:
        self.serial_number = serial_number
        self.sampling_frequency = sampling_frequency
        self.buffer_duration_s = buffer_duration_s
        self._device = None
        self._collector = StreamCollector()

    def _open(self):
        if self._device is not None:
            return self._device
        try:
            import joulescope
        except ImportError as exc:
            raise ConfigError("the joulescope meter needs the 'joulescope' package (pip install 'hilbench[meters]')") from exc
        devices = joulescope.scan(config="auto")
        if self.serial_number is not None:
            devices = [d for d in devices if str(getattr(d, "serial_number", "")) == self.serial_number]
        if not devices:
            which = f" with serial number {self.serial_number}" if self.serial_number else ""
            raise DeviceError(f"joulescope: no Joulescope{which} found (joulescope.scan found none)")
        device = devices[0]
        try:
            device.open()
            device.parameter_set("buffer_duration", self.buffer_duration_s)
            device.parameter_set("sampling_frequency", self.sampling_frequency)
            device.stream_process_register(self._collector)
        except Exception as exc:  # the driver raises its own error types
            raise DeviceError(f"joulescope: cannot open {device}: {exc}") from exc
        self._device = device
        return device

    def start(self) -> None:
        self._open().start()

    def stop(self) -> Trace:
        if self._device is None:
            raise MeasurementError("joulescope: stop() without start()")
        self._device.stop()
        return self._collector.trace((f"device {self._device}",))

    def close(self) -> None:
        if self._device is not None:
            try:
                self._device.close()
            finally:
                self._device = None


def _find_signal(reader: Any, name: str) -> Any | None:
    for signal in reader.signals.values():
        if signal.name == name:
            return signal
    return None


def read_jls(path: Path, marker_signals: tuple[str, ...] = ("gpi[0]", "gpi[1]")) -> Trace:
    """A Joulescope JLS v2 recording as a trace: the ``current`` and ``voltage`` signals (or
    ``current`` and ``power``), and the marker signals as logic bits 0, 1, ... when present."""
    try:
        import pyjls
    except ImportError as exc:
        raise ConfigError("reading JLS files needs 'pyjls' (installed with 'joulescope')") from exc
    path = Path(path)
    if not path.is_file():
        raise MeasurementError(f"{path}: no such JLS recording")
    try:
        reader = pyjls.Reader(str(path))
    except Exception as exc:  # pyjls raises RuntimeError with the C library's message
        raise MeasurementError(f"{path}: not a readable JLS v2 file: {exc}") from exc
    try:
        current_sig = _find_signal(reader, "current")
        if current_sig is None:
            raise MeasurementError(f"{path}: no 'current' signal (signals: "
                                   f"{sorted(s.name for s in reader.signals.values())})")
        n, rate = int(current_sig.length), float(current_sig.sample_rate)
        if rate <= 0:
            raise MeasurementError(f"{path}: 'current' is not a fixed-rate signal")

        def read(sig: Any) -> np.ndarray:
            if int(sig.sample_rate) != int(rate) or int(sig.length) < n:
                raise MeasurementError(f"{path}: signal {sig.name!r} does not share the current's rate and length")
            return np.asarray(reader.fsr(sig.signal_id, 0, n))

        current = read(current_sig).astype(np.float64)
        voltage_sig, power_sig = _find_signal(reader, "voltage"), _find_signal(reader, "power")
        if voltage_sig is not None:
            voltage = read(voltage_sig).astype(np.float64)
        elif power_sig is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                voltage = np.where(current != 0, read(power_sig) / current, 0.0)
        else:
            raise MeasurementError(f"{path}: needs a 'voltage' or 'power' signal next to 'current'")
        logic = None
        for bit, name in enumerate(marker_signals):
            sig = _find_signal(reader, name)
            if sig is None:
                continue
            values = np.unpackbits(read(sig).astype(np.uint8), bitorder="little")[:n]
            logic = (np.zeros(n, dtype=np.uint8) if logic is None else logic) | (values.astype(np.uint8) << bit)
        source = reader.sources.get(current_sig.source_id)
        source_name = f"{getattr(source, 'vendor', '')} {getattr(source, 'model', '')} {getattr(source, 'serial_number', '')}".strip()
    finally:
        reader.close()
    return Trace(meter="joulescope", t_s=np.arange(n) / rate, current_a=current, voltage_v=voltage,
                 rate_hz=rate, logic=logic,
                 sources=(f"Joulescope recording {path.name} ({source_name or 'unknown source'}), {rate:g} samples/s",))
