"""The runner's Python environment on a Linux device: a venv with onnxruntime and numpy.

:func:`ensure_runner_env` makes sure ``VENV/bin/python`` imports the host's onnxruntime version
and numpy, trying in order:

1. the venv as it is (a second deployment costs one remote command);
2. create it with the device's python and ``pip install`` from an index: the device's own pip
   configuration (Raspberry Pi OS points it at piwheels too), or ``device_index_url``, which then
   replaces that configuration (``pip --isolated --index-url``);
3. for an offline device: the host downloads wheels for the *device's* platform (``pip download
   --only-binary=:all: --platform manylinux_2_N_ARCH ... --python-version X.Y``; the tags come
   from the device's machine, glibc and python), keeps them in a cache outside the repository,
   uploads them with SFTP and installs them with ``pip --no-index``;
4. otherwise a :class:`DeviceError` quoting both failures and saying how to fix either.

The host's onnxruntime version is pinned on the device so both sides run the same kernels.
"""
from __future__ import annotations

import importlib.metadata
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import DeviceError
from harness.core.paths import cache_root
from harness.transports.ssh import SshConnection

ORT_VERSION = importlib.metadata.version("onnxruntime")
OLDEST_MANYLINUX_GLIBC_MINOR = 17  # manylinux2014 == manylinux_2_17
COMPLETE_MARKER = ".complete"

_PROBE_DEVICE = ("import json, platform, sys; print(json.dumps({'machine': platform.machine(), "
                 "'python': '%d.%d' % sys.version_info[:2], 'implementation': sys.implementation.name, "
                 "'libc': list(platform.libc_ver())}))")
_PROBE_VENV = ("import json, numpy, onnxruntime; print(json.dumps({'onnxruntime': onnxruntime.__version__, "
               "'numpy': numpy.__version__}))")


@dataclass(frozen=True)
class RunnerEnvSpec:
    """Where and how to provision the runner's venv on the device.

    ``python``: the device's interpreter that creates the venv; ``venv``: its directory
    (relative paths are relative to the login user's home); ``device_index_url``: a package
    index for the device (None: its pip configuration); ``host_index_url``: the same for the
    host's ``pip download`` (None: the host's configuration); ``wheel_dir``: host directory of
    wheels for the device (None: a cache directory per device platform)."""

    python: str = "python3"
    venv: str = "hilbench/venv"
    onnxruntime: str = ORT_VERSION
    device_index_url: str | None = None
    host_index_url: str | None = None
    wheel_dir: Path | None = None
    remote_wheel_dir: str = "hilbench/wheels"
    pip_timeout_s: float = 900.0

    @property
    def venv_python(self) -> str:
        return f"{self.venv.rstrip('/')}/bin/python"

    @property
    def requirements(self) -> list[str]:
        return [f"onnxruntime=={self.onnxruntime}", "numpy"]


@dataclass(frozen=True)
class DevicePython:
    """What the device's python is, for choosing wheels."""

    machine: str
    python: str  # "3.11"
    implementation: str
    libc: tuple[str, str]  # ("glibc", "2.36")

    def platform_tags(self) -> list[str]:
        """pip ``--platform`` tags this device accepts, newest first: manylinux_2_N for every N
        from its glibc down to 2_17, then manylinux2014 (pip expands no manylinux_2_N tag by
        itself, and manylinux2014 alone resolves to old onnxruntime releases)."""
        name, version = self.libc
        if name != "glibc":
            raise DeviceError(f"the device's C library is {name or 'unknown'} {version}, not glibc: "
                              "PyPI has no onnxruntime wheels for it")
        try:
            minor = int(version.split(".")[1])
        except (IndexError, ValueError) as exc:
            raise DeviceError(f"cannot read the device's glibc version {version!r}") from exc
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, OLDEST_MANYLINUX_GLIBC_MINOR - 1, -1)]
        return tags + [f"manylinux2014_{self.machine}"]

    @property
    def key(self) -> str:
        """Names the wheel cache directory for this platform."""
        return f"cp{self.python.replace('.', '')}-{self.machine}-{self.libc[0]}{self.libc[1]}"


def host_pip_download_command(device: DevicePython, spec: RunnerEnvSpec, dest: Path) -> list[str]:
    """The host command that downloads the device's wheels into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
               "--retries", "1", "--timeout", "20", "--only-binary=:all:", "--python-version", device.python, "--implementation", "cp",
               "-d", str(dest)]
    for tag in device.platform_tags():
        command += ["--platform", tag]
    if spec.host_index_url:
        command += ["--isolated", "--index-url", spec.host_index_url]
    return command + spec.requirements


def _probe_venv(conn: SshConnection, spec: RunnerEnvSpec) -> dict | None:
    result = conn.run([spec.venv_python, "-c", _PROBE_VENV], check=False, timeout=120)
    if result.exit_status != 0:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return None


def _usable(found: dict | None, spec: RunnerEnvSpec) -> bool:
    return found is not None and found.get("onnxruntime") == spec.onnxruntime


def probe_device_python(conn: SshConnection, python: str) -> DevicePython:
    result = conn.run([python, "-c", _PROBE_DEVICE], check=False, timeout=60)
    if result.exit_status != 0:
        raise DeviceError(f"{conn.endpoint.where}: cannot run {python!r} (profile field 'ssh.python'): "
                          f"{(result.stderr or result.stdout).strip() or f'exit status {result.exit_status}'}")
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    return DevicePython(facts["machine"], facts["python"], facts["implementation"], tuple(facts["libc"]))


def _create_venv(conn: SshConnection, spec: RunnerEnvSpec) -> None:
    if conn.exists(spec.venv_python):
        return
    result = conn.run([spec.python, "-m", "venv", spec.venv], check=False, timeout=300)
    if result.exit_status != 0:
        raise DeviceError(f"{conn.endpoint.where}: '{spec.python} -m venv {spec.venv}' failed; install the "
                          f"venv module on the device (Debian/Raspberry Pi OS: sudo apt-get install "
                          f"python3-venv):\n{(result.stderr or result.stdout).strip()}")


def _pip_install_from_index(conn: SshConnection, spec: RunnerEnvSpec) -> str | None:
    """None on success, else pip's complaint."""
    command = [spec.venv_python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--retries", "1", "--timeout", "20"]
    if spec.device_index_url:
        command += ["--isolated", "--index-url", spec.device_index_url]
    result = conn.run(command + spec.requirements, check=False, timeout=spec.pip_timeout_s)
    return None if result.exit_status == 0 else _tail(result.stderr or result.stdout)


def host_wheel_dir(device: DevicePython, spec: RunnerEnvSpec) -> Path:
    """The host directory holding (or about to hold) the device's wheels."""
    if spec.wheel_dir is not None:
        return spec.wheel_dir
    return cache_root() / "wheels" / f"{device.key}-onnxruntime{spec.onnxruntime}"


def prepare_wheels(device: DevicePython, spec: RunnerEnvSpec) -> list[Path]:
    """The device's wheels on the host, downloaded once per platform (``pip download``);
    DeviceError with pip's message if they cannot be had."""
    directory = host_wheel_dir(device, spec)
    wheels = sorted(directory.glob("*.whl")) if directory.is_dir() else []
    if wheels and (directory / COMPLETE_MARKER).exists():
        return wheels
    directory.mkdir(parents=True, exist_ok=True)
    command = host_pip_download_command(device, spec, directory)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=spec.pip_timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"host 'pip download' of the device's wheels timed out after {exc.timeout:g} s") from exc
    if result.returncode != 0:
        raise DeviceError(f"host 'pip download' of wheels for {device.key} failed:\n{_tail(result.stderr)}")
    (directory / COMPLETE_MARKER).write_text(" ".join(command) + "\n")
    return sorted(directory.glob("*.whl"))


def _install_uploaded_wheels(conn: SshConnection, spec: RunnerEnvSpec, wheels: list[Path]) -> str | None:
    """Upload ``wheels`` and install them offline; None on success, else pip's complaint."""
    remote = spec.remote_wheel_dir.rstrip("/")
    for wheel in wheels:
        conn.upload(wheel, f"{remote}/{wheel.name}")
    command = [spec.venv_python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--isolated", "--no-index", "--find-links", remote, *spec.requirements]
    result = conn.run(command, check=False, timeout=spec.pip_timeout_s)
    return None if result.exit_status == 0 else _tail(result.stderr or result.stdout)


def ensure_runner_env(conn: SshConnection, spec: RunnerEnvSpec) -> str:
    """The device path of a python that imports onnxruntime ``spec.onnxruntime`` and numpy,
    provisioned as this module's docstring says."""
    if _usable(_probe_venv(conn, spec), spec):
        return spec.venv_python
    device = probe_device_python(conn, spec.python)
    _create_venv(conn, spec)
    index_failure = _pip_install_from_index(conn, spec)
    if index_failure is None and _usable(_probe_venv(conn, spec), spec):
        return spec.venv_python
    try:
        wheels = prepare_wheels(device, spec)
        wheel_failure = _install_uploaded_wheels(conn, spec, wheels)
    except DeviceError as exc:
        wheel_failure = str(exc)
    if wheel_failure is None and _usable(_probe_venv(conn, spec), spec):
        return spec.venv_python
    index = spec.device_index_url or "the device's pip configuration"
    raise DeviceError(
        f"{conn.endpoint.where}: cannot install the runner's packages ({' '.join(spec.requirements)}) "
        f"into {spec.venv} for python {device.python} on {device.machine}.\n"
        f"1) pip install from {index} failed:\n{index_failure or '(installed, but onnxruntime does not import)'}\n"
        f"2) installing wheels uploaded from the host ({host_wheel_dir(device, spec)}) failed:\n"
        f"{wheel_failure or '(installed, but onnxruntime does not import)'}\n"
        "Fix either: give the device access to a package index (or set a reachable one), or put the "
        "wheels into the host directory above on a machine with internet access, e.g.\n  "
        + shlex.join(["python3", *host_pip_download_command(device, spec, host_wheel_dir(device, spec))[1:]]))


def _tail(text: str, lines: int = 12) -> str:
    """The last lines of a tool's output: where pip says what went wrong."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no output)"
