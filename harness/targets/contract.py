"""What the run engine drives: node targets (encode a view, return the packed code and how long
it took, with the figure's basis) and gateways (run the head on codes), by profile kind.

Registries: ``NODE_TARGETS`` maps a profile ``kind`` to a context manager that deploys one node's
encoder and yields a :class:`NodeTarget`; ``GATEWAYS`` maps ``host`` or a profile kind to one that
yields a :class:`Gateway`. The built-in kinds live in :mod:`harness.targets.host` (``local``,
the ``host`` gateway), :mod:`harness.targets.mcu.node` (``mcu``) and
:mod:`harness.targets.linux.roles` (``linux``); third parties publish theirs under the
entry-point group ``hilbench.targets``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

import numpy as np

from harness.core.errors import ConfigError
from harness.config.profiles import DeviceProfile, get_profile
from harness.core.registry import Registry
from quant_models.manifest import NodeModel

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
    """A deployed node encoder. A target may also have ``prepare(view)``: work it does once before
    its first batch (the MCU's per-layer profile inference), which the engine calls before it
    times any batch, so the request spans a meter's windows are cut from never include it."""

    profile: DeviceProfile
    encoder: NodeModel
    info: NodeInfo

    @property
    def batch_size(self) -> int:
        """Most views the engine hands infer_batch at once."""
        ...

    def infer(self, view: np.ndarray) -> NodeReply: ...

    def infer_batch(self, views: np.ndarray) -> list[NodeReply]:
        """One reply per view, in order; each timed on its own."""
        ...


class OneAtATime:
    """For node targets that take one view per request: ``infer_batch`` is a loop."""

    batch_size = 1

    def infer(self, view: np.ndarray) -> NodeReply:
        raise NotImplementedError

    def infer_batch(self, views: np.ndarray) -> list[NodeReply]:
        return [self.infer(view) for view in views]


class Gateway(Protocol):
    name: str
    basis: str

    def classify(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for integer codes [B, C], and per-inference device ns if measured."""


NodeTargetFactory = Callable[[DeviceProfile, NodeModel, Path], ContextManager[NodeTarget]]
GatewayFactory = Callable[[DeviceProfile | None, Path], ContextManager[Gateway]]
BUILTIN_TARGET_MODULES = ("harness.targets.host", "harness.targets.mcu.node", "harness.targets.linux.roles")
NODE_TARGETS: Registry[NodeTargetFactory] = Registry("node target for device kind", "hilbench.targets",
                                                     BUILTIN_TARGET_MODULES)
GATEWAYS: Registry[GatewayFactory] = Registry("gateway for device kind", "hilbench.targets",
                                              BUILTIN_TARGET_MODULES)
register_node_target = NODE_TARGETS.register
register_gateway = GATEWAYS.register


def open_node_target(profile: DeviceProfile, encoder: NodeModel, export_dir: Path) -> ContextManager[NodeTarget]:
    if profile.kind not in NODE_TARGETS:
        raise ConfigError(f"{profile.source}: field 'kind': no node target for kind {profile.kind!r}")
    return NODE_TARGETS.get(profile.kind)(profile, encoder, export_dir)


def open_gateway(name: str, export_dir: Path) -> ContextManager[Gateway]:
    if name == "host":
        return GATEWAYS.get("host")(None, export_dir)
    profile = get_profile(name)
    if profile.kind not in GATEWAYS:
        raise ConfigError(f"{profile.source}: device {name!r} (kind {profile.kind}) cannot be a gateway; "
                          "use 'host' or a linux device")
    return GATEWAYS.get(profile.kind)(profile, export_dir)
