"""A microcontroller node in the run engine's node role: deploy the firmware for one node's
encoder (profile kind ``mcu``), then encode views over the frame protocol in batches, with the
latency in emulated instructions or real microseconds and its basis, and once per deployment the
per-layer profile (each stage's instructions or cycles, MACs and their ratio)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harness.config.profiles import DeviceProfile
from harness.targets.contract import (EMULATED_MCU_BASIS, REAL_MCU_BASIS, NodeInfo, NodeReply, NodeTarget,
                                      register_node_target)
from harness.core.errors import ProtocolError
from harness.targets.mcu.deploy import DeployedMcuNode, deploy_mcu_node
from harness.targets.mcu.driver import InferResult
from quant_models.codegen import model_stages
from quant_models.manifest import NodeModel


class McuNodeTarget:
    def __init__(self, deployed: DeployedMcuNode) -> None:
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
                                    "stack_bounded": fw.stack.bounded,
                                    "kernels": "dsp" if hello.dsp_kernels else "portable"})
        self._profiled = False

    @property
    def batch_size(self) -> int:
        return self.deployed.target.batch_size

    def link_report(self) -> dict[str, Any]:
        """Link counters of this deployment, and the faults injected on it if any."""
        proxy = self.deployed.fault_proxy
        report: dict[str, Any] = {"counters": asdict(self.deployed.target.stats)}
        return report | (proxy.report() if proxy is not None else {})

    def infer(self, view: np.ndarray) -> NodeReply:
        return self.infer_batch(view[None])[0]

    def prepare(self, view: np.ndarray) -> None:
        """The per-layer profile, once, on ``view`` (the engine calls this before timing any batch;
        :meth:`infer_batch` does it first otherwise)."""
        if not self._profiled:
            self.info.extra["layers"] = self.layer_profile(view)
            self._profiled = True

    def infer_batch(self, views: np.ndarray) -> list[NodeReply]:
        self.prepare(views[0])
        results = self.deployed.target.infer_batch([v.tobytes() for v in views])
        return [self._reply(result) for result in results]

    def layer_profile(self, view: np.ndarray) -> list[dict[str, Any]]:
        """One inference on ``view`` timed stage by stage: per stage its name, MACs, device count
        (instructions emulated, cycles on a board) and count per MAC."""
        target = self.deployed.target
        result = target.profile(view.tobytes())
        stages = model_stages(self.encoder, target.hello.dsp_kernels)
        if len(stages) != len(result.stage_ticks):
            raise ProtocolError(
                f"device {target.name}: the firmware timed {len(result.stage_ticks)} stages, the host expects "
                f"{len(stages)} ({', '.join(s.name for s in stages)}); rebuild the firmware")
        layers = []
        for stage, ticks in zip(stages, result.stage_ticks):
            work = target.work(ticks)
            layers.append({"stage": stage.name, "macs": stage.macs, "count": work.count, "unit": work.unit,
                           "per_mac": work.count / stage.macs if stage.macs else None})
        return layers

    def _reply(self, result: InferResult) -> NodeReply:
        work = self.deployed.target.work(result.ticks)
        if work.microseconds is None:  # emulated: virtual time is no board's time
            latency, unit, basis = work.count, "instructions", EMULATED_MCU_BASIS
        else:
            latency, unit, basis = work.microseconds, "us", REAL_MCU_BASIS
        return NodeReply(code=result.code, latency=latency, latency_unit=unit, latency_basis=basis,
                         host_rtt_s=result.round_trip_seconds, ticks=result.ticks, device_count=work.count,
                         device_unit=work.unit, attempts=result.attempts,
                         wire_bytes_sent=result.wire_bytes_sent, wire_bytes_received=result.wire_bytes_received)


@register_node_target("mcu")
@contextmanager
def _mcu_node(profile: DeviceProfile, encoder: NodeModel, export_dir: Path) -> Iterator[NodeTarget]:
    with deploy_mcu_node(profile, encoder) as deployed:
        yield McuNodeTarget(deployed)
