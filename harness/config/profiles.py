"""Device profiles: YAML files saying what a device is and how to reach and deploy to it.

One file per device, read from ``devices/profiles/`` (shipped), every directory in
``$HILBENCH_PROFILE_DIRS`` (``os.pathsep``-separated) and ``~/.config/hilbench/devices/``. Adding a
device means dropping a file there; no code changes. Errors name the file and the field.

Overlays: ``overlays/NAME.yaml`` in any of those directories replaces the ``power`` and
``calibration`` sections of profile NAME (later directories win). ``hilbench devices calibrate``
writes one with the device's measured figures, so its modelled energy rests on its own
measurements without editing the shipped file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from harness.core.datafiles import (FieldError, NamedFiles, check_name_matches_file, find_named, load_named,
                                    read_mapping, scan_named, search_path, validate)
from harness.core.errors import ConfigError, DeviceError
from harness.core.paths import SHIPPED_PROFILES, USER_CONFIG

USER_PROFILES = USER_CONFIG / "devices"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransportSpec(_Strict):
    """How the host reaches the device. Emulated MCUs get their URL from the launcher."""

    url: str | None = Field(default=None, description="pyserial URL: /dev/ttyACM0, rfc2217://host:port, socket://")
    reply_timeout_s: float = Field(default=2.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    max_batch: int = Field(default=16, ge=1, le=255,
                           description="samples per INFER frame (microcontrollers); 1 = one frame per sample")


class SshSpec(_Strict):
    """How to reach a Linux device. Host keys are verified against ``known_hosts`` (or a pinned
    ``host_key``); ``verify_host_key: false`` is an explicit, loudly logged opt-out."""

    host: str
    port: int = Field(default=22, gt=0, lt=65536)
    user: str
    key: str | None = Field(default=None, description="private key file (default: the agent / ~/.ssh)")
    known_hosts: str | None = Field(default=None, description="default ~/.ssh/known_hosts")
    host_key: str | None = Field(default=None, description="pinned public key, e.g. 'ssh-ed25519 AAAA...'")
    verify_host_key: bool = True
    python: str = Field(default="python3", description="python on the device, for the runner venv")
    workdir: str = Field(default="hilbench", description="directory on the device, relative to home")
    connect_timeout_s: float = Field(default=10.0, gt=0)


MCU_DEPLOY_METHODS = ("qemu", "command", "none")
LINUX_DEPLOY_METHODS = ("loopback-sshd", "arm64-netns", "ssh")


class DeploySpec(_Strict):
    """How a model gets onto the device.

    Microcontrollers: ``qemu`` (emulated board), ``command`` (a flash tool such as pyOCD or
    OpenOCD, run with ``{elf}`` replaced by the firmware path) or ``none`` (already flashed).
    Linux devices: ``loopback-sshd`` (the harness starts a real sshd on 127.0.0.1),
    ``arm64-netns`` (the harness starts an arm64 root filesystem under qemu-user with its own sshd
    in a network namespace) or ``ssh`` (a real device, reached with the ``ssh`` section).
    The host itself (kind ``local``): ``local`` (onnxruntime in this process)."""

    method: Literal["qemu", "command", "none", "loopback-sshd", "arm64-netns", "ssh", "local"]
    command: list[str] | None = None
    icount_shift: int | None = Field(default=None, ge=0, le=10, description="qemu: -icount shift")

    @model_validator(mode="after")
    def _command_given(self) -> "DeploySpec":
        if self.method == "command" and not self.command:
            raise FieldError("command", "method 'command' needs 'command', e.g. [pyocd, flash, -t, stm32f446retx, '{elf}']")
        return self


class PowerSpec(_Strict):
    """Datasheet or measured power figures, each with its source."""

    active_mw: float = Field(gt=0)
    idle_mw: float = Field(ge=0)
    source: str = Field(min_length=3, description="where the numbers come from")


class MeterSpec(_Strict):
    """A power meter on the device's supply, started before a run streams and stopped after
    (:mod:`harness.measure.metering`). ``kind`` names a meter of the registry
    (:data:`harness.measure.meters.METERS`: ``ppk2``, ``joulescope``, ``ina219-ssh``, or a
    plug-in's); the fields a kind does not use must stay unset (checked when a run is planned).

    Windows: ``marker`` cuts the trace where the board's marker GPIO (see
    :mod:`harness.config.boards`), wired to the meter's logic input ``marker_input``, is high;
    ``timestamps`` maps the host's request/reply times to the meter's clock with the offset the
    driver measured, and states the window's uncertainty."""

    kind: str = Field(min_length=1)
    simulated: bool = Field(default=False, description=(
        "ppk2 on an emulated board: the PPK2 protocol simulator on a pseudo-terminal, read through "
        "ppk2-api, fed a current trace synthesised from the board's own inference windows and its "
        "power figures; every figure is labelled 'simulated meter'"))
    port: str | None = Field(default=None, description="ppk2: the PPK2's serial port, e.g. /dev/serial/by-id/usb-Nordic_Semiconductor_PPK2_...-if01")
    serial_number: str | None = Field(default=None, description="joulescope: which instrument (default: the first found)")
    via: str | None = Field(default=None, description="ina219-ssh: 'local', or the linux device profile whose SSH login polls the sensor")
    mode: Literal["source", "ampere"] | None = Field(default=None, description="ppk2: source meter (the PPK2 supplies the board) or ampere meter")
    voltage_mv: int | None = Field(default=None, gt=0, description="ppk2: the supply voltage (source mode: what the PPK2 sets; ampere mode: the board's own supply)")
    sample_rate_hz: float | None = Field(default=None, gt=0, description="samples per second (ppk2: fixed 100000; joulescope: sampling_frequency)")
    windows: Literal["marker", "timestamps"] = "marker"
    marker_input: int | None = Field(default=None, ge=0, description="the meter's logic input wired to the board's marker pin (ppk2: D0..D7 = 0..7; joulescope: GPI0/GPI1 = 0/1)")
    options: dict[str, Any] = Field(default_factory=dict, description="further keyword arguments of the meter's class (e.g. ina219-ssh: shunt_ohms, address, busnum)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``meter: ppk2`` is ``meter: {kind: ppk2}``. The kind and the fields it needs are
        checked when a run is planned (:func:`harness.measure.metering.check_meter`)."""
        return {"kind": data} if isinstance(data, str) else data


class CalibrationSpec(_Strict):
    """What ``hilbench devices calibrate`` measured on this device with its meter, written to
    an overlay: the power figures go to ``power``; this keeps how they were obtained and the
    cycles the device spends per instruction an emulated stand-in counts for the same workload."""

    cycles_per_instruction: float | None = Field(default=None, gt=0, description=(
        "device cycles / emulated instructions for the same inferences (None: no emulated stand-in was run)"))
    against: str | None = Field(default=None, description="the emulated profile whose instruction counts were used")
    workload: str = Field(min_length=1)
    samples: int = Field(gt=0)
    windows: int = Field(ge=0)
    meter: str = Field(min_length=1, description="the meter's basis (label, instrument, supply, rate, marker)")
    label: Literal["measured", "simulated meter"]
    measured_at: str


OVERLAY_DIR = "overlays"
OVERLAY_FIELDS = ("power", "calibration")


def overlay_paths(name: str) -> list[Path]:
    """The overlays of profile ``name`` that exist, in the order they apply."""
    return [path for d in profile_dirs() if (path := d / OVERLAY_DIR / f"{name}.yaml").is_file()]


def _overlaid(data: dict, name: str) -> dict:
    for path in overlay_paths(name):
        extra = read_mapping(path, "a profile overlay")
        unknown = sorted(set(extra) - set(OVERLAY_FIELDS))
        if unknown:
            raise ConfigError(f"{path}: field {unknown[0]!r}: a profile overlay sets only {', '.join(OVERLAY_FIELDS)}")
        if "power" in extra:
            validate(PowerSpec, extra["power"], str(path), "power")
        if "calibration" in extra:
            validate(CalibrationSpec, extra["calibration"], str(path), "calibration")
        data = {**data, **extra}
    return data


class DeviceProfile(_Strict):
    name: str
    kind: Literal["mcu", "linux", "local"]
    description: str = ""
    emulated: bool
    board: str | None = Field(default=None, description="mcu: a board of harness.config.boards")
    cpu: str = ""
    clock_hz: int | None = Field(default=None, gt=0)
    transport: TransportSpec = Field(default_factory=TransportSpec)
    deploy: DeploySpec
    ssh: SshSpec | None = None
    power: PowerSpec | None = None
    radio: str | None = None
    meter: MeterSpec | None = None
    calibration: CalibrationSpec | None = None
    calibrated_by: str | None = Field(default=None, description=(
        "an emulated profile standing in for a calibrated real one: compute time = instructions x that "
        "profile's measured cycles per instruction / its clock, energy model = its measured power"))
    source: str = Field(default="<memory>", exclude=True)

    @field_validator("board")
    @classmethod
    def _known_board(cls, name: str | None, info: ValidationInfo) -> str | None:
        from harness.config.boards import BOARDS

        if name is not None and info.data.get("kind") == "mcu":
            try:
                BOARDS.get(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceProfile":
        if self.calibrated_by is not None and not self.emulated:
            raise FieldError("calibrated_by", "only an emulated profile stands in for a calibrated device")
        if self.meter is not None and self.meter.simulated:
            if not self.emulated:
                raise FieldError("meter.simulated", "a simulated meter needs an emulated device: on a real board it "
                                 "would pass a synthesised trace off as the board's energy; use the real meter")
            if self.power is None:
                raise FieldError("power", "a simulated meter synthesises its current from the 'power' section "
                                 "(active_mw, idle_mw, source); give one")
        if self.kind == "mcu":
            if self.board is None:
                raise FieldError("board", "an mcu profile needs 'board'")
            board = self.board_description
            if self.emulated and (self.deploy.method != "qemu" or board.qemu_machine is None):
                raise FieldError("deploy.method", f"an emulated mcu deploys with method 'qemu' on a board QEMU "
                                 f"emulates (board {self.board!r}, method {self.deploy.method!r})")
            if not self.emulated and self.transport.url is None:
                raise FieldError("transport.url", "a real mcu needs 'transport.url' (e.g. /dev/ttyACM0)")
            if self.deploy.method not in MCU_DEPLOY_METHODS:
                raise FieldError("deploy.method", f"an mcu deploys with one of {list(MCU_DEPLOY_METHODS)}, "
                                 f"not {self.deploy.method!r}")
        elif self.kind == "linux":
            if self.deploy.method not in LINUX_DEPLOY_METHODS:
                raise FieldError("deploy.method", f"a linux device deploys with one of {list(LINUX_DEPLOY_METHODS)}, "
                                 f"not {self.deploy.method!r}")
            if not self.emulated and (self.ssh is None or self.deploy.method != "ssh"):
                raise FieldError("ssh" if self.ssh is None else "deploy.method",
                                 "a real linux device needs an 'ssh' section and deploy method 'ssh'")
        return self

    @property
    def board_description(self):
        from harness.config.boards import BOARDS

        return BOARDS.get(self.board) if self.board else None


def load_profile(path: Path) -> DeviceProfile:
    data = _overlaid(read_mapping(path, "a device profile"), Path(path).stem)
    profile = validate(DeviceProfile, {**data, "source": str(path)}, str(path))
    check_name_matches_file(profile, path)
    return profile


def calibrated_model(profile: DeviceProfile) -> DeviceProfile:
    """The profile whose figures model ``profile``'s energy: itself, or for an emulated stand-in
    (``calibrated_by``) the calibrated real device, which must have a calibration with cycles per
    instruction, a clock and power figures."""
    if profile.calibrated_by is None:
        return profile
    real = get_profile(profile.calibrated_by, named_by=f"{profile.source}: field 'calibrated_by'")
    cal = real.calibration
    if cal is None or cal.cycles_per_instruction is None or real.clock_hz is None or real.power is None:
        raise ConfigError(f"{profile.source}: field 'calibrated_by': device {real.name!r} ({real.source}) has no "
                          "calibration with cycles per instruction, clock_hz and power: run `hilbench devices "
                          f"calibrate {real.name}` with its meter first")
    return real


def preflight(profile: DeviceProfile) -> None:
    """What can be checked of a device before anything is trained or deployed: the local files its
    profile names exist (SSH key, known_hosts), and a real board's serial link is there (its device
    node exists, something listens on its TCP port). Errors name the profile file, the field and
    the device, and say what to do."""
    if profile.ssh is not None and profile.deploy.method == "ssh":
        _check_ssh_files(profile, profile.ssh)
    if profile.kind == "mcu" and not profile.emulated and profile.transport.url:
        from harness.transports import probe_transport

        where = f"{profile.source}: field 'transport.url': device {profile.name!r}"
        try:
            probe_transport(profile.transport.url)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        except DeviceError as exc:
            raise DeviceError(f"{where} cannot be reached: {exc}") from exc


def _check_ssh_files(profile: DeviceProfile, ssh: SshSpec) -> None:
    key = Path(ssh.key).expanduser() if ssh.key else None
    if key is not None and not key.is_file():
        raise ConfigError(f"{profile.source}: field 'ssh.key': device {profile.name!r}: private key {key} does not "
                          "exist; fix the path, or create a key (ssh-keygen -t ed25519) and install it on the device "
                          f"(ssh-copy-id -i {key} -p {ssh.port} {ssh.user}@{ssh.host})")
    if ssh.verify_host_key and ssh.host_key is None:
        known = Path(ssh.known_hosts or "~/.ssh/known_hosts").expanduser()
        if not known.is_file():
            raise ConfigError(f"{profile.source}: field 'ssh.known_hosts': device {profile.name!r}: {known} does not "
                              "exist, so the device's host key cannot be verified; add the key after checking its "
                              f"fingerprint (ssh-keyscan -p {ssh.port} {ssh.host} >> {known}), or pin it in 'ssh.host_key'")


def profile_dirs() -> list[Path]:
    return search_path(SHIPPED_PROFILES, "HILBENCH_PROFILE_DIRS", USER_PROFILES)


def load_profiles(dirs: list[Path] | None = None) -> dict[str, DeviceProfile]:
    """All usable profiles by name (a broken file or a name defined twice is left out)."""
    return load_named(profile_dirs() if dirs is None else dirs, load_profile, "device")


def scan_profiles(dirs: list[Path] | None = None) -> NamedFiles[DeviceProfile]:
    """Usable profiles and, for ``hilbench devices list``, the unusable ones with their errors."""
    return scan_named(profile_dirs() if dirs is None else dirs, load_profile, "device")


def get_profile(name: str, dirs: list[Path] | None = None, named_by: str = "") -> DeviceProfile:
    """The profile called ``name`` (``named_by``: where the name was given, for the error)."""
    return find_named(name, profile_dirs() if dirs is None else dirs, load_profile, "device", named_by)
