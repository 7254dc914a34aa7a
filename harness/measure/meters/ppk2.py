"""Nordic Power Profiler Kit II through ``ppk2-api`` (optional extra ``meters``).

The PPK2 streams 4-byte samples at 100 kS/s over its USB serial port: a 14-bit ADC value,
its current range and the 8 logic inputs D0-D7, which is what aligns windows to inferences
(wire the firmware's marker pin to one of D0-D7). ``ppk2-api`` reads the calibration metadata,
converts each sample to microamps and returns the logic byte; this driver runs its reader in a
thread and returns a :class:`~harness.measure.meters.Trace`.

Source meter mode: the PPK2 supplies the device at ``voltage_mv`` and measures its current.
Ampere meter mode: the device has its own supply of ``voltage_mv`` (you must say what it is,
since the PPK2 then measures current only).

Clock: sample k is at k / 100 kS/s on the meter's clock. Each read notes the host's monotonic
time and how many samples have arrived; the smallest (host time - meter time of the last sample
read) is the host-meter clock offset (it overestimates by the shortest USB latency), and the
spread of those differences is stated as the offset's uncertainty (``trace.meta``).
A meter that stops delivering samples while measuring (unplugged: the port's ioctl fails; or
silent for ``stall_timeout_s``) is reported lost by :meth:`PPK2Meter.check`.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.core.errors import ConfigError, DeviceError, MeasurementError
from harness.measure.meters import METERS, Meter, SpecError, Trace

if TYPE_CHECKING:
    from harness.config.profiles import DeviceProfile, MeterSpec

PPK2_SAMPLE_RATE_HZ = 100_000.0
"""Nordic PPK2 documentation: 100 kS/s; ppk2-api's buffer sizing assumes the same."""

_SOURCES = ("Nordic PPK2 via ppk2-api: 100 kS/s, current from the device's calibration metadata",)


@METERS.register
class PPK2Meter(Meter):
    """A PPK2 on a serial port (``/dev/ttyACM0``; ``PPK2_API.list_devices()`` finds it)."""

    name = "ppk2"
    nominal_rate_hz = PPK2_SAMPLE_RATE_HZ
    logic_inputs = 8  # D0..D7
    input_name = "D{}"
    spec_fields = frozenset({"port", "mode", "voltage_mv", "sample_rate_hz"})

    @classmethod
    def spec_errors(cls, spec: "MeterSpec", profile: "DeviceProfile") -> list[SpecError]:
        errors = [e for e in super().spec_errors(spec, profile) if e[0] != "simulated"]
        if spec.port is None and not spec.simulated:
            errors.append(("port", "the PPK2's serial port is needed, e.g. /dev/serial/by-id/usb-Nordic_Semiconductor_"
                                   "PPK2_...-if01 (ls /dev/serial/by-id/), or simulated: true on an emulated board"))
        if spec.port is not None and spec.simulated:
            errors.append(("port", "a simulated PPK2 opens its own pseudo-terminal; remove port"))
        if spec.voltage_mv is None:
            errors.append(("voltage_mv", "say the supply voltage (source mode: the PPK2 powers the board with it; "
                                         "ampere mode: the board's own supply), e.g. 3300"))
        elif not 800 <= spec.voltage_mv <= 5000:
            errors.append(("voltage_mv", f"the PPK2 supplies 800..5000 mV, not {spec.voltage_mv}"))
        unknown = sorted(set(spec.options) - {"power_on", "drain_quiet_s", "stall_timeout_s"})
        if unknown:
            errors.append(("options", f"the ppk2 meter takes power_on, drain_quiet_s, stall_timeout_s; not {unknown}"))
        if spec.sample_rate_hz is not None and spec.sample_rate_hz != PPK2_SAMPLE_RATE_HZ:
            errors.append(("sample_rate_hz", f"the PPK2 streams at a fixed {PPK2_SAMPLE_RATE_HZ:.0f} samples/s, "
                                             f"not {spec.sample_rate_hz:g}"))
        return errors

    @classmethod
    def from_spec(cls, spec: "MeterSpec", profile: "DeviceProfile") -> "PPK2Meter":
        assert spec.port is not None and spec.voltage_mv is not None  # spec_errors said so
        return cls(spec.port, voltage_mv=spec.voltage_mv, mode=spec.mode or "source", **spec.options)

    def describe(self) -> str:
        return (f"Nordic PPK2 {self.mode} meter {self.voltage_mv / 1000:g} V, "
                f"{PPK2_SAMPLE_RATE_HZ / 1000:g} kS/s, on {self.port}")

    def __init__(self, port: str, voltage_mv: int = 3300, mode: str = "source", power_on: bool = True,
                 drain_quiet_s: float = 0.05, stall_timeout_s: float | None = 2.0, **serial_kwargs: Any) -> None:
        if mode not in ("source", "ampere"):
            raise ConfigError(f"ppk2: mode must be 'source' or 'ampere', not {mode!r}")
        if not 800 <= voltage_mv <= 5000:
            raise ConfigError(f"ppk2: voltage_mv must be 800..5000 (the PPK2's range), not {voltage_mv}")
        self.port = port
        self.voltage_mv = voltage_mv
        self.mode = mode
        self.power_on = power_on
        self.drain_quiet_s = drain_quiet_s
        self.stall_timeout_s = stall_timeout_s
        self._serial_kwargs = serial_kwargs
        self._ppk: Any = None  # ppk2_api.PPK2_API once opened (the library has no type information)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current_ua: list[np.ndarray] = []
        self._logic: list[np.ndarray] = []
        self._received = 0
        self._offsets: list[float] = []  # host monotonic at a read - meter time of the last sample read
        self._last_data = 0.0
        self._error: BaseException | None = None

    def _open(self):
        if self._ppk is not None:
            return self._ppk
        try:
            from ppk2_api.ppk2_api import PPK2_API
        except ImportError as exc:
            raise ConfigError("the ppk2 meter needs the 'ppk2-api' package (pip install 'hilbench[meters]')") from exc
        try:
            ppk = PPK2_API(self.port, timeout=1, write_timeout=1, **self._serial_kwargs)
        except Exception as exc:  # serial.SerialException and OSError, raised inside ppk2-api
            raise DeviceError(f"ppk2: cannot open {self.port}: {exc}") from exc
        if not ppk.get_modifiers():
            ppk.ser.close()
            raise DeviceError(f"ppk2: {self.port} sent no calibration metadata; is it a PPK2?")
        if self.mode == "source":
            ppk.use_source_meter()
        else:
            ppk.use_ampere_meter()
        ppk.set_source_voltage(self.voltage_mv)
        if self.mode == "source" and self.power_on:
            ppk.toggle_DUT_power("ON")
        self._ppk = ppk
        return ppk

    def _read_loop(self) -> None:
        ppk = self._ppk
        try:
            while not self._stop.is_set():
                if not self._read_once(ppk):
                    time.sleep(0.001)
        except Exception as exc:  # kept and re-raised in stop(), with context
            self._error = exc

    def _read_once(self, ppk) -> bool:
        buf = ppk.get_data()
        if not buf:
            return False
        received_at = time.monotonic()
        samples, logic = ppk.get_samples(buf)
        if len(samples) != len(logic):
            raise MeasurementError(f"ppk2: {len(samples)} current samples but {len(logic)} logic samples "
                                   "(a sample was out of range)")
        with self._lock:
            self._current_ua.append(np.asarray(samples, dtype=np.float64))
            self._logic.append(np.asarray(logic, dtype=np.uint8))
            self._received += len(samples)
            if samples:
                self._offsets.append(received_at - (self._received - 1) / PPK2_SAMPLE_RATE_HZ)
            self._last_data = received_at
        return True

    def start(self) -> None:
        ppk = self._open()
        with self._lock:
            self._current_ua, self._logic, self._received, self._offsets = [], [], 0, []
            self._last_data = time.monotonic()
        self._error = None
        self._stop.clear()
        ppk.start_measuring()
        self._thread = threading.Thread(target=self._read_loop, name="ppk2-reader", daemon=True)
        self._thread.start()

    def samples_received(self) -> int:
        with self._lock:
            return self._received

    def check(self) -> None:
        if self._thread is None:
            return
        if self._error is not None:
            raise MeasurementError(f"ppk2 on {self.port} was lost while measuring: {self._error}") from self._error
        if self.stall_timeout_s is not None:
            with self._lock:
                silent = time.monotonic() - self._last_data
            if silent > self.stall_timeout_s:
                raise MeasurementError(f"ppk2 on {self.port} was lost while measuring: no samples for {silent:.1f} s "
                                       "(it streams 100 kS/s while measuring)")

    def stop(self) -> Trace:
        if self._thread is None:
            raise MeasurementError("ppk2: stop() without start()")
        ppk = self._ppk
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise MeasurementError(f"ppk2 on {self.port}: reading samples failed: {self._error}") from self._error
        try:
            ppk.stop_measuring()
        except Exception as exc:  # serial.SerialException, OSError: the instrument went away
            raise MeasurementError(f"ppk2 on {self.port} was lost: cannot stop measuring: {exc}") from exc
        quiet_since = time.monotonic()  # bytes still in flight after AVERAGE_STOP
        while time.monotonic() - quiet_since < self.drain_quiet_s:
            if self._read_once(ppk):
                quiet_since = time.monotonic()
            else:
                time.sleep(0.002)
        with self._lock:
            current = (np.concatenate(self._current_ua) if self._current_ua else np.empty(0)) * 1e-6
            logic = np.concatenate(self._logic) if self._logic else np.empty(0, dtype=np.uint8)
            offsets = np.asarray(self._offsets)
        n = len(current)
        meta: dict[str, Any] = {"port": self.port, "modifiers": dict(ppk.modifiers)}
        if offsets.size:
            meta["host_minus_meter_s"] = float(offsets.min())
            meta["clock_offset_uncertainty_s"] = float(np.percentile(offsets, 95) - offsets.min())
        return Trace(meter=self.name, t_s=np.arange(n) / PPK2_SAMPLE_RATE_HZ, current_a=current,
                     voltage_v=np.full(n, self.voltage_mv / 1000.0), rate_hz=PPK2_SAMPLE_RATE_HZ,
                     logic=logic, sources=(*_SOURCES, f"{self.mode} meter mode at {self.voltage_mv} mV"),
                     meta=meta)

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._ppk is not None:
            ppk, self._ppk = self._ppk, None
            try:
                if self.mode == "source" and self.power_on:
                    ppk.toggle_DUT_power("OFF")
            except Exception:  # the instrument is gone (lost mid-run): nothing left to switch off
                pass
            finally:
                ppk.ser.close()
