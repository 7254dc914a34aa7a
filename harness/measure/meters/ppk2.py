"""Nordic Power Profiler Kit II through ``ppk2-api`` (optional extra ``meters``).

The PPK2 streams 4-byte samples at 100 kS/s over its USB serial port: a 14-bit ADC value,
its current range and the 8 logic inputs D0-D7, which is what aligns windows to inferences
(wire the firmware's marker pin to one of D0-D7). ``ppk2-api`` reads the calibration metadata,
converts each sample to microamps and returns the logic byte; this driver runs its reader in a
thread and returns a :class:`~harness.measure.meters.Trace`.

Source meter mode: the PPK2 supplies the device at ``voltage_mv`` and measures its current.
Ampere meter mode: the device has its own supply of ``voltage_mv`` (you must say what it is,
since the PPK2 then measures current only).
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from harness.core.errors import ConfigError, DeviceError, MeasurementError
from harness.measure.meters import METERS, Meter, Trace

PPK2_SAMPLE_RATE_HZ = 100_000.0
"""Nordic PPK2 documentation: 100 kS/s; ppk2-api's buffer sizing assumes the same."""

_SOURCES = ("Nordic PPK2 via ppk2-api: 100 kS/s, current from the device's calibration metadata",)


@METERS.register
class PPK2Meter(Meter):
    """A PPK2 on a serial port (``/dev/ttyACM0``; ``PPK2_API.list_devices()`` finds it)."""

    name = "ppk2"
    nominal_rate_hz = PPK2_SAMPLE_RATE_HZ

    def __init__(self, port: str, voltage_mv: int = 3300, mode: str = "source", power_on: bool = True,
                 drain_quiet_s: float = 0.05, **serial_kwargs: Any) -> None:
        if mode not in ("source", "ampere"):
            raise ConfigError(f"ppk2: mode must be 'source' or 'ampere', not {mode!r}")
        if not 800 <= voltage_mv <= 5000:
            raise ConfigError(f"ppk2: voltage_mv must be 800..5000 (the PPK2's range), not {voltage_mv}")
        self.port = port
        self.voltage_mv = voltage_mv
        self.mode = mode
        self.power_on = power_on
        self.drain_quiet_s = drain_quiet_s
        self._serial_kwargs = serial_kwargs
        self._ppk: Any = None  # ppk2_api.PPK2_API once opened (the library has no type information)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current_ua: list[float] = []
        self._logic: list[int] = []
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
        samples, logic = ppk.get_samples(buf)
        if len(samples) != len(logic):
            raise MeasurementError(f"ppk2: {len(samples)} current samples but {len(logic)} logic samples "
                                   "(a sample was out of range)")
        with self._lock:
            self._current_ua.extend(samples)
            self._logic.extend(logic)
        return True

    def start(self) -> None:
        ppk = self._open()
        with self._lock:
            self._current_ua, self._logic = [], []
        self._error = None
        self._stop.clear()
        ppk.start_measuring()
        self._thread = threading.Thread(target=self._read_loop, name="ppk2-reader", daemon=True)
        self._thread.start()

    def samples_received(self) -> int:
        with self._lock:
            return len(self._current_ua)

    def stop(self) -> Trace:
        if self._thread is None:
            raise MeasurementError("ppk2: stop() without start()")
        ppk = self._ppk
        ppk.stop_measuring()
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise MeasurementError(f"ppk2: reading samples failed: {self._error}") from self._error
        quiet_since = time.monotonic()  # bytes still in flight after AVERAGE_STOP
        while time.monotonic() - quiet_since < self.drain_quiet_s:
            if self._read_once(ppk):
                quiet_since = time.monotonic()
            else:
                time.sleep(0.002)
        with self._lock:
            current = np.asarray(self._current_ua, dtype=np.float64) * 1e-6
            logic = np.asarray(self._logic, dtype=np.uint8)
        n = len(current)
        return Trace(meter=self.name, t_s=np.arange(n) / PPK2_SAMPLE_RATE_HZ, current_a=current,
                     voltage_v=np.full(n, self.voltage_mv / 1000.0), rate_hz=PPK2_SAMPLE_RATE_HZ,
                     logic=logic, sources=(*_SOURCES, f"{self.mode} meter mode at {self.voltage_mv} mV"),
                     meta={"port": self.port, "modifiers": dict(ppk.modifiers)})

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._ppk is not None:
            try:
                if self.mode == "source" and self.power_on:
                    self._ppk.toggle_DUT_power("OFF")
                self._ppk.ser.close()
            finally:
                self._ppk = None
