"""Putting a model onto a Linux device: reach the device by its profile, then deploy a target.

Real Raspberry Pis and the stand-ins share every step but the first, which the profile's
``deploy.method`` picks from the ``LAUNCHERS`` registry. A launcher is a context manager that
yields a :class:`LinuxAccess` (how to log in, where the runner's python is, what the device's
timings mean) and tears down whatever it started:

* ``loopback-sshd`` (``pi-loopback``): a private sshd on 127.0.0.1; the device's python is this
  harness's own interpreter (it has onnxruntime and numpy), so nothing is installed;
* ``arm64-netns`` (``rpi4-qemu``): the arm64 root filesystem's sshd under qemu-user in a network
  namespace; its venv was provisioned when the root filesystem was built;
* ``ssh`` (a real device): the profile's ``ssh`` section; the runner's venv is provisioned on
  first use (index, else wheels uploaded from the host).

:func:`deploy_linux_target` is the one entry point (:func:`deploy_linux_node` for a node of an
export, ONNX or integer LSTM); :func:`linux_device` lets several targets share one launched device.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Literal

from harness.core.errors import ConfigError
from harness.core.registry import Registry
from harness.config.profiles import DeviceProfile
from harness.targets.linux.driver import DEFAULT_BATCH_SIZE, LinuxTarget
from harness.targets.linux.runner_env import RunnerEnvSpec
from harness.targets.linux.runner_files import ModelKind, RunnerFiles
from harness.transports.faults import active_link_faults, fault_proxy
from harness.transports.ssh import SshConnection, SshEndpoint

LOOPBACK_LABEL = ("this host's CPU through a loopback sshd (pi-loopback stand-in), "
                  "not a Raspberry Pi's speed")
REAL_DEVICE_LABEL = "measured on the device (time.perf_counter_ns around each inference)"


@dataclass(frozen=True)
class LinuxAccess:
    """How to use a reachable Linux device.

    ``python``: a device interpreter that already has onnxruntime and numpy, or None to
    provision a venv as ``env`` says; ``workdir``: device directory for runner and models."""

    endpoint: SshEndpoint
    python: str | None
    workdir: str
    emulated: bool
    timing_basis: str
    env: RunnerEnvSpec = field(default_factory=RunnerEnvSpec)
    startup_timeout_s: float = 120.0
    reply_timeout_s: float = 120.0


Launcher = Callable[[DeviceProfile], ContextManager[LinuxAccess]]


LAUNCHERS: Registry[Launcher] = Registry("linux deploy method")


def launcher_for(profile: DeviceProfile) -> Launcher:
    if profile.kind != "linux":
        raise ConfigError(f"{profile.source}: device {profile.name!r} is a {profile.kind} device, not linux")
    if profile.deploy.method not in LAUNCHERS:
        raise ConfigError(f"{profile.source}: field 'deploy.method': no linux launcher for "
                          f"{profile.deploy.method!r}; known: {', '.join(LAUNCHERS.names())}")
    return LAUNCHERS.get(profile.deploy.method)


@LAUNCHERS.register("loopback-sshd")
@contextmanager
def _loopback_sshd(profile: DeviceProfile) -> Iterator[LinuxAccess]:
    from harness.emulators.sshd import LoopbackSshd

    with LoopbackSshd(device=profile.name) as server:
        yield LinuxAccess(server.endpoint, python=sys.executable, workdir=str(server.workdir),
                          emulated=True, timing_basis=LOOPBACK_LABEL,
                          env=RunnerEnvSpec(venv=str(server.workdir / "venv"),
                                            remote_wheel_dir=str(server.workdir / "wheels")),
                          startup_timeout_s=60.0, reply_timeout_s=60.0)


@LAUNCHERS.register("arm64-netns")
@contextmanager
def _arm64_netns(profile: DeviceProfile) -> Iterator[LinuxAccess]:
    from harness.emulators.arm64 import EMULATION_LABEL, VENV_PYTHON, Arm64Device

    with Arm64Device(device=profile.name) as emulator:
        # Emulation is 100-300x slower than a host: generous timeouts.
        yield LinuxAccess(emulator.endpoint, python=VENV_PYTHON, workdir="hilbench", emulated=True,
                          timing_basis=EMULATION_LABEL, startup_timeout_s=600.0, reply_timeout_s=1200.0)


@LAUNCHERS.register("ssh")
@contextmanager
def _ssh(profile: DeviceProfile) -> Iterator[LinuxAccess]:
    spec = profile.ssh
    if spec is None:
        raise ConfigError(f"{profile.source}: deploy method 'ssh' needs an 'ssh' section (host, user, key, known_hosts)")
    endpoint = SshEndpoint(
        device=profile.name, host=spec.host, port=spec.port, user=spec.user,
        key=Path(spec.key).expanduser() if spec.key else None,
        known_hosts=Path(spec.known_hosts).expanduser() if spec.known_hosts else None,
        host_key=spec.host_key, verify_host_key=spec.verify_host_key, connect_timeout_s=spec.connect_timeout_s)
    workdir = spec.workdir.rstrip("/")
    yield LinuxAccess(endpoint, python=None, workdir=workdir, emulated=profile.emulated,
                      timing_basis=REAL_DEVICE_LABEL if not profile.emulated else "emulated device",
                      env=RunnerEnvSpec(python=spec.python, venv=f"{workdir}/venv",
                                        remote_wheel_dir=f"{workdir}/wheels"))


def linux_device(profile: DeviceProfile) -> ContextManager[LinuxAccess]:
    """Launch (stand-ins) or describe (real devices) the Linux device of ``profile``."""
    return launcher_for(profile)(profile)


@contextmanager
def deploy_linux_target(
    profile: DeviceProfile,
    model_path: Path,
    role: Literal["node", "gateway"],
    *,
    kind: ModelKind = "onnx",
    code_exponent: int | None = None,
    view_shape: tuple[int, int] | None = None,
    exact_model_path: Path | None = None,
    check_path: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    access: LinuxAccess | None = None,
    link_stream: int = 0,
) -> Iterator[LinuxTarget]:
    """A deployed, started :class:`LinuxTarget` for ``model_path`` on ``profile``'s device.

    ``role``: "node" (an encoder; needs the export's ``check_path``; an ONNX one also needs
    ``code_exponent`` and runs ``exact_model_path`` first where the export has one; ``kind``
    "int-lstm": ``model_path`` is an LSTM node's integer model) or "gateway" (the head). ``access``:
    an already launched device (from :func:`linux_device`) to share; otherwise the device is
    launched here and stopped on exit. With link faults active in this thread (the run engine's
    ``--link-faults``), the SSH connection goes through a fault proxy (``link_stream`` seeds it).
    Stops the runner and closes the connection on exit."""
    with ExitStack() as stack:
        if access is None:
            access = stack.enter_context(linux_device(profile))
        endpoint = access.endpoint
        proxy = stack.enter_context(fault_proxy(endpoint.host, endpoint.port, active_link_faults(), link_stream))
        if proxy is not None:  # faults on the SSH connection's bytes, as a flaky network has them
            endpoint = replace(endpoint, via=("127.0.0.1", proxy.port))
        connection = stack.enter_context(SshConnection(endpoint))
        target = LinuxTarget(connection, Path(model_path), role, python=access.python, env=access.env,
                             workdir=access.workdir, kind=kind, code_exponent=code_exponent, view_shape=view_shape,
                             exact_model_path=exact_model_path, check_path=check_path,
                             emulated=access.emulated, timing_basis=access.timing_basis, batch_size=batch_size,
                             startup_timeout_s=access.startup_timeout_s, reply_timeout_s=access.reply_timeout_s)
        stack.enter_context(target)
        target.fault_proxy = proxy
        yield target


def deploy_linux_node(profile: DeviceProfile, files: RunnerFiles, *, batch_size: int = DEFAULT_BATCH_SIZE,
                      access: LinuxAccess | None = None, link_stream: int = 0) -> ContextManager[LinuxTarget]:
    """:func:`deploy_linux_target` for one node of an export (see
    :func:`harness.targets.linux.runner_files.runner_files`)."""
    return deploy_linux_target(profile, files.model, "node", kind=files.kind, code_exponent=files.code_exponent,
                               view_shape=files.input_shape, exact_model_path=files.exact_model,
                               check_path=files.check, batch_size=batch_size, access=access,
                               link_stream=link_stream)
