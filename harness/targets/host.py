"""The host as a device: a node's QCDQ encoder (profile kind ``local``) and the head (the
``host`` gateway) in onnxruntime on this machine, timed with the monotonic clock."""
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
from quant_models.intparams import IntEncoder
from quant_models.manifest import NodeFiles, NodeModel, node_files
from quant_models.packing import pack_codes


class LocalNodeTarget(OneAtATime):
    """The node's encoder in onnxruntime on this machine, run as the device runner runs it
    (devices/runner/hil_runner.py: the same exact configurations, self-check and timing)."""

    def __init__(self, profile: DeviceProfile, encoder: IntEncoder, files: NodeFiles):
        import onnxruntime as ort

        from devices.runner.hil_runner import Model, RunnerError, load_check

        if files.check_vectors is None:
            raise DeviceError(f"{files.onnx.parent}: the export has no check vectors for node {encoder.node}; "
                              "export the model again")
        self.profile = profile
        self.encoder: NodeModel = encoder
        try:
            self.model = Model(str(files.onnx), "node", encoder.code_exponent, threads=1,
                               exact_path=None if files.exact_onnx is None else str(files.exact_onnx),
                               check=load_check(str(files.check_vectors)))
        except RunnerError as exc:
            raise DeviceError(f"{profile.name}: node {encoder.node}: {exc}") from exc
        self.info = NodeInfo(board="host", extra={"onnxruntime": ort.__version__, **self.model.describe()})

    def infer(self, view: np.ndarray) -> NodeReply:
        start = time.perf_counter_ns()
        codes, device_ns = self.model.infer(view[None])
        elapsed_ns = time.perf_counter_ns() - start
        packed = pack_codes(codes, self.encoder.code_bits)[0].tobytes()
        ns = int(device_ns[0])
        return NodeReply(code=packed, latency=ns / 1000, latency_unit="us", latency_basis=HOST_BASIS,
                         host_rtt_s=elapsed_ns / 1e9, device_count=float(ns), device_unit="ns")


@register_node_target("local")
@contextmanager
def _local_node(profile: DeviceProfile, encoder: IntEncoder, export_dir: Path) -> Iterator[NodeTarget]:
    yield LocalNodeTarget(profile, encoder, node_files(export_dir, encoder.node))


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
