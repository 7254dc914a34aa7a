"""Device profiles: YAML files saying what a device is and how to reach and deploy to it.

One file per device, read from ``devices/profiles/`` (shipped), every directory in
``$HILBENCH_PROFILE_DIRS`` (``os.pathsep``-separated) and ``~/.config/hilbench/devices/``. Adding a
device means dropping a file there; no code changes. Errors name the file and the field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    meter: str | None = None
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
    data = read_mapping(path, "a device profile")
    profile = validate(DeviceProfile, {**data, "source": str(path)}, str(path))
    check_name_matches_file(profile, path)
    return profile


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
