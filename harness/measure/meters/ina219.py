"""An INA219 current sensor on a Linux device (e.g. a Raspberry Pi), polled over SSH.

The device runs :data:`POLLER`, a short Python program using ``pi-ina219`` (install it on the
device: ``pip install pi-ina219``; the host does not need it), which prints one line per
reading: ``t_ns,bus_v,current_ma[,marker]`` with the device's monotonic clock. The host reads
the lines as they arrive, through any :class:`CommandRunner` (the SSH transport, or
:class:`LocalCommandRunner` when hilbench itself runs on the device), and parses them with
:func:`parse_poller_output` into a trace. Power is bus voltage x current (the bus voltage is the
load side of the shunt, i.e. the device under test's supply).

An INA219 polled from Python gives a few hundred to ~1000 readings per second (a 12-bit
conversion takes 532 us), so windows of short inferences hold few samples: the per-inference
distribution is then not available and :func:`harness.measure.meters.windows.meter_energy` reports the
aggregate. Windows come from the marker column (the device reads a GPIO value file, e.g.
``/sys/class/gpio/gpio17/value``, wired to the firmware's marker pin) or from timestamps mapped
to the device's clock with the offset estimated at run time (``meta['host_minus_meter_s']``).
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol

import numpy as np

from harness.core.errors import ConfigError, DeviceError, MeasurementError
from harness.measure.meters import METERS, Meter, SpecError, Trace

if TYPE_CHECKING:
    from harness.config.profiles import DeviceProfile, MeterSpec
    from harness.transports.ssh import SshConnection

HEADER = "# hilbench-ina219 1"

POLLER = r'''
import sys, time
from ina219 import INA219
shunt_ohms, max_amps, address, busnum, period_s, marker_path = sys.argv[1:7]
ina = INA219(float(shunt_ohms), None if max_amps == "auto" else float(max_amps),
             busnum=None if busnum == "auto" else int(busnum), address=int(address, 0))
ina.configure(voltage_range=ina.RANGE_16V, gain=ina.GAIN_AUTO)
marker = None if marker_path == "none" else open(marker_path)
period = float(period_s)
print("# hilbench-ina219 1 t_ns,bus_v,current_ma" + ("" if marker is None else ",marker"), flush=True)
while True:
    t = time.monotonic_ns()
    line = "%d,%.4f,%.5f" % (t, ina.voltage(), ina.current())
    if marker is not None:
        marker.seek(0)
        line += "," + marker.read(1)
    print(line, flush=True)
    if period > 0:
        time.sleep(period)
'''.strip()


@dataclass(frozen=True)
class PollerSamples:
    t_s: np.ndarray          # device monotonic clock, seconds
    voltage_v: np.ndarray
    current_a: np.ndarray
    marker: np.ndarray | None


def parse_poller_output(lines: Iterable[str]) -> PollerSamples:
    """Parse the poller's output (header line, then one reading per line). Blank lines and
    other ``#`` comments are skipped; anything else malformed is an error naming its line."""
    t, v, i, m = [], [], [], []
    header_seen, has_marker = False, False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(HEADER):
            header_seen, has_marker = True, line.endswith(",marker")
            continue
        if line.startswith("#"):
            continue
        if not header_seen:
            raise MeasurementError(f"ina219 output line {number}: expected the header {HEADER!r} first, got {line!r}")
        fields = line.split(",")
        if len(fields) != (4 if has_marker else 3):
            raise MeasurementError(f"ina219 output line {number}: expected {4 if has_marker else 3} fields, got {line!r}")
        try:
            t.append(int(fields[0]) * 1e-9)
            v.append(float(fields[1]))
            i.append(float(fields[2]) * 1e-3)
            if has_marker:
                m.append(int(fields[3]))
        except ValueError as exc:
            raise MeasurementError(f"ina219 output line {number}: not a reading: {line!r}") from exc
    if not header_seen:
        raise MeasurementError("ina219 output has no header line: did the poller start (is pi-ina219 installed "
                               "on the device)?")
    t_arr = np.asarray(t)
    if t_arr.size > 1 and np.any(np.diff(t_arr) <= 0):
        raise MeasurementError("ina219 output: timestamps do not increase")
    return PollerSamples(t_arr, np.asarray(v), np.asarray(i), np.asarray(m, dtype=np.uint8) if has_marker else None)


class RunningCommand(Protocol):
    def lines(self) -> Iterator[str]:
        """Standard output, line by line as it arrives; ends when the command ends."""

    def stop(self) -> str:
        """Terminate the command; returns what it wrote to standard error."""


class CommandRunner(Protocol):
    def start(self, argv: list[str]) -> RunningCommand:
        """Start ``argv`` on the device."""


class _LocalProcess:
    def __init__(self, argv: list[str]) -> None:
        try:
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        except OSError as exc:
            raise DeviceError(f"cannot start {argv[0]!r}: {exc.strerror}") from exc

    def lines(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        yield from self._proc.stdout

    def stop(self) -> str:
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            _, err = self._proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        return err or ""


class LocalCommandRunner:
    """Runs the command on this machine (hilbench running on the device itself)."""

    def start(self, argv: list[str]) -> RunningCommand:
        return _LocalProcess(argv)


class _SshProcess:
    """A command on a Linux device over SSH, its output as lines (asyncssh, text mode)."""

    def __init__(self, runner: "SshCommandRunner", argv: list[str]) -> None:
        from harness.transports.ssh import command_line

        self._runner = runner
        self._line = command_line(argv)
        conn = runner.connection
        assert conn is not None

        async def _start():
            return await conn._require()[1].create_process(self._line)

        try:
            self._process = conn.submit(_start())
        except Exception as exc:  # asyncssh.Error, OSError
            raise DeviceError(f"ina219: cannot start the poller on {runner.profile.name}: {exc}") from exc

    def lines(self) -> Iterator[str]:
        conn = self._runner.connection
        assert conn is not None
        while True:
            try:
                line = conn.submit(self._process.stdout.readline())
            except Exception:  # the channel closed
                return
            if not line:
                return
            yield line

    def stop(self) -> str:
        conn = self._runner.connection
        assert conn is not None

        async def _stop() -> str:
            self._process.terminate()
            self._process.close()
            try:
                return await self._process.stderr.read()
            except Exception:
                return ""

        try:
            return conn.submit(_stop())
        finally:
            self._runner.close()


class SshCommandRunner:
    """Runs the poller on a Linux device profile's SSH login (its ``ssh`` section, host key
    verified as for the device itself)."""

    def __init__(self, profile: "DeviceProfile") -> None:
        if profile.ssh is None:
            raise ConfigError(f"{profile.source}: field 'ssh': the INA219 is polled over SSH, and device "
                              f"{profile.name!r} has no ssh section")
        self.profile = profile
        self.connection: SshConnection | None = None

    def start(self, argv: list[str]) -> RunningCommand:
        from pathlib import Path

        from harness.transports.ssh import SshConnection, SshEndpoint

        spec = self.profile.ssh
        assert spec is not None
        endpoint = SshEndpoint(
            device=self.profile.name, host=spec.host, port=spec.port, user=spec.user,
            key=Path(spec.key).expanduser() if spec.key else None,
            known_hosts=Path(spec.known_hosts).expanduser() if spec.known_hosts else None,
            host_key=spec.host_key, verify_host_key=spec.verify_host_key, connect_timeout_s=spec.connect_timeout_s)
        self.connection = SshConnection(endpoint)
        self.connection.connect()
        return _SshProcess(self, argv)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@METERS.register
class INA219Meter(Meter):
    """Polls an INA219 through ``runner`` (an SSH session to the device, or local)."""

    name = "ina219-ssh"
    nominal_rate_hz = None
    logic_inputs = 1  # the marker column: a GPIO value file on the polling device (options.marker_path)
    input_name = "marker column"
    spec_fields = frozenset({"via"})

    @classmethod
    def spec_errors(cls, spec: "MeterSpec", profile: "DeviceProfile") -> list[SpecError]:
        errors = super().spec_errors(spec, profile)
        if spec.via is None:
            errors.append(("via", "say where the INA219 is polled: 'local' (this machine) or a linux device "
                                  "profile whose SSH login reaches it"))
        if spec.windows == "marker" and not spec.options.get("marker_path"):
            errors.append(("options", "windows 'marker' needs options.marker_path: the polling device's GPIO value "
                                      "file wired to the board's marker (e.g. /sys/class/gpio/gpio17/value)"))
        return errors

    @classmethod
    def from_spec(cls, spec: "MeterSpec", profile: "DeviceProfile") -> "INA219Meter":
        if spec.via == "local":
            return cls(LocalCommandRunner(), **spec.options)
        from harness.config.profiles import get_profile

        assert spec.via is not None
        return cls(SshCommandRunner(get_profile(spec.via, named_by=f"{profile.source}: field 'meter.via'")),
                   **spec.options)

    def describe(self) -> str:
        return f"INA219 polled with pi-ina219 ({self.argv[4]} ohm shunt)"

    def __init__(self, runner: CommandRunner, shunt_ohms: float = 0.1, max_expected_amps: float | None = None,
                 address: int = 0x40, busnum: int | None = None, period_s: float = 0.0,
                 marker_path: str | None = None, python: str = "python3") -> None:
        if shunt_ohms <= 0:
            raise ConfigError(f"ina219: shunt_ohms must be > 0, not {shunt_ohms}")
        self.runner = runner
        self.argv = [python, "-u", "-c", POLLER, repr(shunt_ohms),
                     "auto" if max_expected_amps is None else repr(max_expected_amps), hex(address),
                     "auto" if busnum is None else str(busnum), repr(period_s), marker_path or "none"]
        self._running: RunningCommand | None = None
        self._thread: threading.Thread | None = None
        self._lines: list[str] = []
        self._offsets: list[float] = []  # host monotonic at receipt - device time, per reading

    def _read(self, running: RunningCommand) -> None:
        for line in running.lines():
            received = time.monotonic()
            self._lines.append(line)
            head = line.split(",", 1)[0]
            if head.isdigit():
                self._offsets.append(received - int(head) * 1e-9)

    def start(self) -> None:
        self._lines, self._offsets = [], []
        self._running = self.runner.start(self.argv)
        self._thread = threading.Thread(target=self._read, args=(self._running,), name="ina219-reader", daemon=True)
        self._thread.start()

    def stop(self) -> Trace:
        if self._running is None or self._thread is None:
            raise MeasurementError("ina219: stop() without start()")
        stderr = self._running.stop()
        self._thread.join(timeout=5)
        self._running, self._thread = None, None
        try:
            samples = parse_poller_output(self._lines)
        except MeasurementError as exc:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            detail = f"; device stderr: {tail}" if tail else ""
            raise MeasurementError(f"{exc}{detail}") from exc
        if len(samples.t_s) < 2:
            raise MeasurementError(f"ina219: only {len(samples.t_s)} readings; record longer")
        return trace_from_poller(samples, min(self._offsets) if self._offsets else None)


def trace_from_poller(samples: PollerSamples, host_minus_meter_s: float | None = None) -> Trace:
    """A trace from parsed poller output. ``host_minus_meter_s`` maps the device clock to the
    host's: the smallest (receipt time - reading time) seen, which overestimates the offset by
    the shortest transport latency."""
    meta = {} if host_minus_meter_s is None else {"host_minus_meter_s": host_minus_meter_s}
    rate = (len(samples.t_s) - 1) / (samples.t_s[-1] - samples.t_s[0]) if len(samples.t_s) > 1 else 0.0
    return Trace(meter=INA219Meter.name, t_s=samples.t_s, current_a=samples.current_a, voltage_v=samples.voltage_v,
                 rate_hz=None, logic=samples.marker,
                 sources=(f"INA219 polled with pi-ina219 on the device, mean {rate:.0f} readings/s; "
                          "power = bus voltage x current, each reading held until the next",),
                 meta=meta)
