"""The host as a device: a node's QCDQ encoder (profile kind ``local``) and the head (the
``host`` gateway) in onnxruntime on this machine, timed with the monotonic clock."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.config.profiles import DeviceProfile
from harness.targets.contract import HOST_BASIS, Gateway, NodeInfo, NodeReply, NodeTarget, register_gateway, register_node_target
from quant_models.intparams import IntEncoder
from quant_models.packing import pack_codes


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
