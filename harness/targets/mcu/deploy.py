"""Putting a node encoder onto a microcontroller: generate C, build firmware, deploy, connect.

Real boards and emulated stand-ins share every step but deploy, which is chosen by the
profile's ``deploy.method`` from the ``DEPLOYERS`` registry: ``qemu`` boots the ELF in
qemu-system-arm and yields its socket URL; ``command`` runs a flash tool (pyOCD, OpenOCD) and
yields the profile's serial URL; ``none`` assumes the board already runs this firmware.
The host then refuses firmware whose model hash is not the expected one.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from harness.core.errors import ConfigError, DeviceError, ProtocolError
from harness.targets.mcu.firmware import FirmwareImage, build_firmware
from harness.core.paths import KERNEL_INCLUDE_DIRS, KERNEL_SOURCES, cache_root, firmware_source_digest
from harness.config.profiles import DeviceProfile
from harness.targets.mcu.protocol import TimerKind
from harness.core.registry import Registry
from harness.targets.mcu.stack_usage import StackEstimate
from harness.targets.mcu.driver import McuTarget
from harness.transports.faults import LinkFaultProxy, LinkFaults, active_link_faults, faulty_url
from quant_models.codegen import generate_model_c
from quant_models.manifest import NodeModel
from quant_models.packing import payload_bytes

Deployer = Callable[[DeviceProfile, FirmwareImage], ContextManager[str]]
DEPLOYERS: Registry[Deployer] = Registry("microcontroller deploy method")
register_deployer = DEPLOYERS.register


def _image_from_json(d: dict) -> FirmwareImage:
    stack = StackEstimate(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("stack").items()})  # type: ignore[arg-type]  # JSON written by asdict()
    return FirmwareImage(**{**d, "elf": Path(d["elf"]), "map_file": Path(d["map_file"]),
                            "timer_kind": TimerKind[d["timer_kind"]], "stack": stack})


def build_node_firmware(profile: DeviceProfile, encoder: NodeModel, *, root: Path | None = None) -> FirmwareImage:
    """Firmware for ``encoder`` on ``profile``'s board; built once per content (cached)."""
    board = profile.board_description
    if board is None:
        raise ConfigError(f"{profile.source}: device {profile.name!r} is not a microcontroller")
    model_c = generate_model_c(encoder)
    batch = profile.transport.max_batch
    input_bytes = encoder.input_shape[0] * encoder.input_shape[1]
    code_bytes = payload_bytes(encoder.code_len, encoder.code_bits)
    key = hashlib.sha256("\n".join([board.name, str(encoder.node), model_c, firmware_source_digest(),
                                    str(batch)]).encode()).hexdigest()
    out = (root or cache_root() / "firmware") / f"{board.name}-node{encoder.node}-{key[:16]}"
    meta = out / "image.json"  # written last: its presence marks a complete build
    if meta.exists():
        return _image_from_json(json.loads(meta.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.c").write_text(model_c)
    image = build_firmware(board, [out / "model.c", *KERNEL_SOURCES], out, node_id=encoder.node,
                           model_include_dirs=list(KERNEL_INCLUDE_DIRS),
                           max_input_bytes=max(64, batch * input_bytes), max_code_bytes=code_bytes,
                           max_batch=batch)
    record = asdict(image) | {"timer_kind": image.timer_kind.name, "elf": str(image.elf),
                              "map_file": str(image.map_file)}
    meta.write_text(json.dumps(record))
    return image


@register_deployer("qemu")
@contextmanager
def _deploy_qemu(profile: DeviceProfile, image: FirmwareImage) -> Iterator[str]:
    from harness.emulators.qemu import ICOUNT_SHIFT, QemuNode, QemuNodeSpec

    board = profile.board_description
    shift = profile.deploy.icount_shift if profile.deploy.icount_shift is not None else ICOUNT_SHIFT
    spec = QemuNodeSpec(board.qemu_machine, image.elf, name=f"{profile.name}/node{image.node_id}", icount_shift=shift)
    with QemuNode(spec) as node:
        try:
            yield node.url
        except DeviceError as exc:
            if not node.exited_within(1.0):
                raise
            raise DeviceError(f"device {profile.name}/node{image.node_id}: the emulator exited "
                              f"(status {node.exit_status}) while the run talked to it: {exc}; "
                              f"QEMU's stderr: {node.stderr_text().strip() or '(empty)'}") from exc


@register_deployer("command")
@contextmanager
def _deploy_command(profile: DeviceProfile, image: FirmwareImage) -> Iterator[str]:
    command = [part.replace("{elf}", str(image.elf)) for part in profile.deploy.command or []]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except FileNotFoundError as exc:
        raise DeviceError(f"device {profile.name}: flash tool {command[0]!r} not found "
                          f"({profile.source}, field 'deploy.command')") from exc
    if result.returncode != 0:
        raise DeviceError(f"device {profile.name}: flashing failed ({' '.join(command)}):\n"
                          f"{(result.stderr or result.stdout).strip()}")
    yield _serial_url(profile)


@register_deployer("none")
@contextmanager
def _deploy_none(profile: DeviceProfile, image: FirmwareImage) -> Iterator[str]:
    yield _serial_url(profile)


def _serial_url(profile: DeviceProfile) -> str:
    if profile.transport.url is None:
        raise ConfigError(f"{profile.source}: field 'transport.url': device {profile.name!r} is reached over "
                          "serial; give its URL (e.g. /dev/ttyACM0)")
    return profile.transport.url


@dataclass
class DeployedMcuNode:
    profile: DeviceProfile
    encoder: NodeModel
    firmware: FirmwareImage
    target: McuTarget
    fault_proxy: LinkFaultProxy | None = None

    @property
    def icount_shift(self) -> int | None:
        return self.target.icount_shift


def model_hash8(encoder: NodeModel) -> bytes:
    return bytes.fromhex(encoder.sha256())[:8]


@contextmanager
def deploy_mcu_node(profile: DeviceProfile, encoder: NodeModel, *, expected_hash: bytes | None = None,
                    link_faults: LinkFaults | None = None) -> Iterator[DeployedMcuNode]:
    """Build, deploy and connect; the target refuses firmware whose hash is not ``expected_hash``
    (default: ``encoder``'s own). ``link_faults`` (default: the run's, see
    :func:`harness.transports.faults.injecting`) puts a fault-injecting proxy on the link.
    Stops emulators and closes links on exit."""
    from harness.emulators.qemu import ICOUNT_SHIFT

    image = build_node_firmware(profile, encoder)
    shift = None
    if profile.emulated:
        shift = profile.deploy.icount_shift if profile.deploy.icount_shift is not None else ICOUNT_SHIFT
    with ExitStack() as stack:
        url = stack.enter_context(DEPLOYERS.get(profile.deploy.method)(profile, image))
        faults = link_faults if link_faults is not None else active_link_faults()
        url, proxy = stack.enter_context(faulty_url(url, faults, stream=encoder.node))
        target = McuTarget(url, name=f"{profile.name}/node{encoder.node}",
                           expected_model_hash=expected_hash or model_hash8(encoder), icount_shift=shift,
                           reply_timeout=profile.transport.reply_timeout_s,
                           max_retries=profile.transport.max_retries, max_batch=profile.transport.max_batch)
        try:
            target.connect()
        except ProtocolError:
            raise
        except DeviceError as exc:
            if profile.name in str(exc):
                raise
            raise DeviceError(f"device {profile.name} ({profile.source}), node {encoder.node}: {exc}") from exc
        stack.callback(target.close)
        yield DeployedMcuNode(profile, encoder, image, target, proxy)
