"""The host as a device: a node's encoder (profile kind ``local``) through the device runner's
code on this machine (QCDQ in onnxruntime, a quantized LSTM's integer model in numpy) and the
head (the ``host`` gateway) in onnxruntime, timed with the monotonic clock."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.config.profiles import DeviceProfile
from harness.targets.contract import (HOST_BASIS, Gateway, NodeInfo, NodeReply, NodeTarget, OneAtATime, register_gateway,
                                      register_node_target)
from harness.core.errors import DeviceError
from harness.targets.linux.runner_files import RunnerFiles, open_in_process, runner_files
from quant_models.manifest import NodeModel
from quant_models.packing import pack_codes

INT_LSTM_HOST_BASIS = "measured on host (integer LSTM in numpy: onnxruntime cannot run QuantLSTM; monotonic clock)"


class LocalNodeTarget(OneAtATime):
    """The node's encoder on this machine, run as the device runner runs it
    (devices/runner/hil_runner.py: the same configurations, self-check and timing)."""

    def __init__(self, profile: DeviceProfile, encoder: NodeModel, files: RunnerFiles):
        import onnxruntime as ort

        from devices.runner.hil_runner import RunnerError

        self.profile, self.encoder = profile, encoder
        try:
            self.model = open_in_process(files)
        except RunnerError as exc:
            raise DeviceError(f"{profile.name}: node {encoder.node}: {exc}") from exc
        self.basis = HOST_BASIS if files.kind == "onnx" else INT_LSTM_HOST_BASIS
        self.info = NodeInfo(board="host", extra={"onnxruntime": ort.__version__, **self.model.describe()})

    def infer(self, view: np.ndarray) -> NodeReply:
        start = time.perf_counter_ns()
        codes, device_ns = self.model.infer(view[None])
        elapsed_ns = time.perf_counter_ns() - start
        packed = pack_codes(codes, self.encoder.code_bits)[0].tobytes()
        ns = int(device_ns[0])
        return NodeReply(code=packed, latency=ns / 1000, latency_unit="us", latency_basis=self.basis,
                         host_rtt_s=elapsed_ns / 1e9, device_count=float(ns), device_unit="ns")


@register_node_target("local")
@contextmanager
def _local_node(profile: DeviceProfile, encoder: NodeModel, export_dir: Path) -> Iterator[NodeTarget]:
    yield LocalNodeTarget(profile, encoder, runner_files(export_dir, encoder))


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
