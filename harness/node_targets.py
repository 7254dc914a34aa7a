"""What the run engine drives: node targets (encode a view, return the packed code and how long
it took, with the figure's basis) and gateways (run the head on codes), by profile kind.

Registries: ``NODE_TARGETS`` maps a profile ``kind`` to a context manager that deploys one node's
encoder and yields a :class:`NodeTarget`; ``GATEWAYS`` maps ``host`` or a profile kind to one that
yields a :class:`Gateway`. Linux devices register from :mod:`harness.targets.linux`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

import numpy as np

from harness.errors import ConfigError
from harness.profiles import DeviceProfile
from harness.registry import Registry
from quant_models.intparams import IntEncoder
from quant_models.packing import pack_codes

EMULATED_MCU_BASIS = "counted on emulator (QEMU -icount instructions, not cycles)"
REAL_MCU_BASIS = "measured on device (DWT cycle counter / clock)"
HOST_BASIS = "measured on host (onnxruntime, monotonic clock)"


@dataclass(frozen=True)
class NodeReply:
    code: bytes
    latency: float
    latency_unit: str  # instructions | us
    latency_basis: str
    host_rtt_s: float
    ticks: int | None = None
    device_count: float | None = None
    device_unit: str | None = None
    attempts: int = 1
    wire_bytes_sent: int = 0
    wire_bytes_received: int = 0


@dataclass
class NodeInfo:
    board: str | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    stack_bytes: int | None = None
    extra: dict = field(default_factory=dict)


class NodeTarget(Protocol):
    profile: DeviceProfile
    encoder: IntEncoder
    info: NodeInfo

    def infer(self, view: np.ndarray) -> NodeReply: ...


class Gateway(Protocol):
    name: str
    basis: str

    def classify(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for integer codes [B, C], and per-inference device ns if measured."""


NodeTargetFactory = Callable[[DeviceProfile, IntEncoder, Path], ContextManager[NodeTarget]]
GatewayFactory = Callable[[DeviceProfile | None, Path], ContextManager[Gateway]]
NODE_TARGETS: Registry[NodeTargetFactory] = Registry("node target for device kind")
GATEWAYS: Registry[GatewayFactory] = Registry("gateway for device kind")
register_node_target = NODE_TARGETS.register
register_gateway = GATEWAYS.register


def open_node_target(profile: DeviceProfile, encoder: IntEncoder, export_dir: Path) -> ContextManager[NodeTarget]:
    _load_plugins()
    if profile.kind not in NODE_TARGETS:
        raise ConfigError(f"{profile.source}: field 'kind': no node target for kind {profile.kind!r}")
    return NODE_TARGETS.get(profile.kind)(profile, encoder, export_dir)


def open_gateway(name: str, export_dir: Path) -> ContextManager[Gateway]:
    _load_plugins()
    if name == "host":
        return GATEWAYS.get("host")(None, export_dir)
    from harness.profiles import get_profile

    profile = get_profile(name)
    if profile.kind not in GATEWAYS:
        raise ConfigError(f"{profile.source}: device {name!r} (kind {profile.kind}) cannot be a gateway; "
                          "use 'host' or a linux device")
    return GATEWAYS.get(profile.kind)(profile, export_dir)


def _load_plugins() -> None:
    """Targets defined outside this module register on import (Linux) or by entry point."""
    from importlib import import_module
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    if find_spec("harness.targets.linux") is not None:
        import_module("harness.targets.linux")
    for ep in entry_points(group="hilbench.targets"):
        ep.load()


# ---- microcontrollers ---------------------------------------------------------------------

class McuNodeTarget:
    def __init__(self, deployed):
        self.deployed = deployed
        self.profile = deployed.profile
        self.encoder = deployed.encoder
        fw = deployed.firmware
        hello = deployed.target.hello
        self.info = NodeInfo(board=hello.board, flash_bytes=fw.flash_bytes, ram_bytes=fw.ram_bytes,
                             stack_bytes=fw.max_stack_bytes,
                             extra={"flash_capacity": fw.flash_capacity, "ram_capacity": fw.ram_capacity,
                                    "clock_hz": hello.clock_hz, "timer_hz": hello.timer_hz,
                                    "timer": hello.timer_kind.name, "model_hash": hello.model_hash.hex(),
                                    "protocol_version": hello.protocol_version,
                                    "stack_bounded": fw.stack.bounded})

    def infer(self, view: np.ndarray) -> NodeReply:
        result = self.deployed.target.infer(view.tobytes())
        work = self.deployed.target.work(result.ticks)
        if work.emulated:
            latency, unit, basis = work.count, "instructions", EMULATED_MCU_BASIS
        else:
            latency, unit, basis = work.microseconds, "us", REAL_MCU_BASIS
        return NodeReply(code=result.code, latency=latency, latency_unit=unit, latency_basis=basis,
                         host_rtt_s=result.round_trip_seconds, ticks=result.ticks, device_count=work.count,
                         device_unit=work.unit, attempts=result.attempts,
                         wire_bytes_sent=result.wire_bytes_sent, wire_bytes_received=result.wire_bytes_received)


@register_node_target("mcu")
@contextmanager
def _mcu_node(profile: DeviceProfile, encoder: IntEncoder, export_dir: Path) -> Iterator[NodeTarget]:
    from harness.deploy import deploy_mcu_node

    with deploy_mcu_node(profile, encoder) as deployed:
        yield McuNodeTarget(deployed)


# ---- the host: onnxruntime ----------------------------------------------------------------

class LocalNodeTarget:
    """The node's QCDQ ONNX encoder in onnxruntime on this machine."""

    def __init__(self, profile: DeviceProfile, encoder: IntEncoder, onnx_path: Path):
        import onnxruntime as ort

        self.profile, self.encoder = profile, encoder
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.info = NodeInfo(board="host", extra={"onnxruntime": ort.__version__})

    def infer(self, view: np.ndarray) -> NodeReply:
        x = (view.astype(np.float32) / 256.0)[None, None]
        start = time.perf_counter_ns()
        values = self.session.run(None, {"view": x})[0]
        elapsed_ns = time.perf_counter_ns() - start
        codes = np.round(values / 2.0 ** self.encoder.code_exponent).astype(np.int64)
        packed = pack_codes(codes, self.encoder.code_bits)[0].tobytes()
        return NodeReply(code=packed, latency=elapsed_ns / 1000, latency_unit="us", latency_basis=HOST_BASIS,
                         host_rtt_s=elapsed_ns / 1e9, device_count=float(elapsed_ns), device_unit="ns")


@register_node_target("local")
@contextmanager
def _local_node(profile: DeviceProfile, encoder: IntEncoder, export_dir: Path) -> Iterator[NodeTarget]:
    yield LocalNodeTarget(profile, encoder, export_dir / f"node{encoder.node}.onnx")


class HostGateway:
    name = "host"
    basis = HOST_BASIS

    def __init__(self, export_dir: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(export_dir / "head.onnx"), providers=["CPUExecutionProvider"])

    def classify(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits = self.session.run(None, {"codes": codes.astype(np.float32)})[0]
        return logits.argmax(axis=1), None


@register_gateway("host")
@contextmanager
def _host_gateway(profile: DeviceProfile | None, export_dir: Path) -> Iterator[Gateway]:
    yield HostGateway(export_dir)
