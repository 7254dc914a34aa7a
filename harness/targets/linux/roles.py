"""Linux devices in the run engine's two roles, and the ``hilbench devices check`` of one.

Registers, for profiles of kind ``linux``, a node target (the node's encoder on the device: its
QCDQ ONNX, or a quantized LSTM's integer model in numpy; one view per request, each timed on its
own, over the one runner session, packed into the bytes a node sends) and a gateway (the head on
all nodes' codes, in batches) with :mod:`harness.targets.contract`, which loads this module when
a ``linux`` kind is first asked for.
"""
from __future__ import annotations

import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harness.targets.contract import NodeInfo, NodeReply, OneAtATime, register_gateway, register_node_target
from harness.config.profiles import DeviceProfile
from harness.core.errors import DeviceError
from harness.targets.linux.deploy import deploy_linux_node, deploy_linux_target, linux_device
from harness.targets.linux.driver import LinuxTarget
from harness.targets.linux.runner_files import runner_files
from quant_models.manifest import NodeModel
from quant_models.packing import pack_codes


class LinuxNodeTarget(OneAtATime):
    """A node encoder on a Linux device, as the run engine's ``NodeTarget``. An LSTM node's
    latency basis also says that its integer model ran in numpy, not onnxruntime."""

    def __init__(self, profile: DeviceProfile, encoder: NodeModel, target: LinuxTarget) -> None:
        self.profile, self.encoder, self.target = profile, encoder, target
        hello = target.hello
        self.basis = (target.timing_basis if target.kind == "onnx"
                      else f"{target.timing_basis}; {hello['configuration']['description']}")
        self.info = NodeInfo(board=hello["cpu_model"], extra={
            **target.configuration,
            "machine": hello["machine"], "python": hello["python"], "onnxruntime": hello["onnxruntime"],
            "numpy": hello["numpy"], "governor": hello["governor"], "model_sha256": hello["model_sha256"],
            "peak_rss_bytes_after_load": hello["peak_rss_bytes"],
            "timing_basis": target.timing_basis, "emulated": target.emulated})

    def link_report(self) -> dict[str, Any]:
        """The faults injected on this node's SSH connection under --link-faults."""
        proxy = self.target.fault_proxy
        return {} if proxy is None else proxy.report()

    def infer(self, view: np.ndarray) -> NodeReply:
        result = self.target.encode(np.asarray(view)[None])
        ns = int(result.device_ns[0])
        return NodeReply(code=pack_codes(result.codes, self.encoder.code_bits)[0].tobytes(),
                         latency=ns / 1000.0, latency_unit="us", latency_basis=self.basis,
                         host_rtt_s=float(result.round_trip_s[0]), device_count=float(ns), device_unit="ns")


class LinuxGateway:
    """The head on a Linux device, as the run engine's ``Gateway``."""

    def __init__(self, target: LinuxTarget) -> None:
        self.target = target
        self.name = target.name
        self.basis = target.timing_basis

    def classify(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        result = self.target.classify(codes)
        return result.predictions, result.device_ns


@register_node_target("linux")
@contextmanager
def _linux_node(profile: DeviceProfile, encoder: NodeModel, export_dir: Path) -> Iterator[LinuxNodeTarget]:
    with deploy_linux_node(profile, runner_files(export_dir, encoder), link_stream=encoder.node) as target:
        yield LinuxNodeTarget(profile, encoder, target)


@register_gateway("linux")
@contextmanager
def _linux_gateway(profile: DeviceProfile | None, export_dir: Path) -> Iterator[LinuxGateway]:
    assert profile is not None
    with deploy_linux_target(profile, export_dir / "head.onnx", "gateway") as target:
        yield LinuxGateway(target)


def _probe_model(path: Path, width: int = 4) -> None:
    """A tiny ONNX "head" (logits = codes): enough to prove the whole path to a device."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["codes"], ["logits"])], "hilbench-probe",
        [helper.make_tensor_value_info("codes", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", width])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def check_linux_device(profile: DeviceProfile) -> dict[str, object]:
    """Reach the device, make sure its runner environment works, run a probe model through the
    runner, and report what the device is (rows for a key/value table)."""
    with ExitStack() as stack:
        access = stack.enter_context(linux_device(profile))
        model = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hilbench-probe-"))) / "probe.onnx"
        _probe_model(model)
        target = stack.enter_context(deploy_linux_target(profile, model, "gateway", access=access))
        codes = np.arange(8, dtype=np.uint8).reshape(2, 4)
        result = target.classify(codes)
        if not np.array_equal(result.logits, codes.astype(np.float32)):
            raise DeviceError(f"{target.where}: the probe model returned {result.logits.tolist()} for {codes.tolist()}")
        info = target.info()
        ep = access.endpoint
        verified = ("OFF (verify_host_key: false)" if not ep.verify_host_key
                    else "pinned key" if ep.host_key else f"known_hosts {ep.known_hosts_path()}")
        return {"address": f"{ep.user}@{ep.address}", "host key": verified, "emulated": profile.emulated,
                "machine": info.machine, "cpu": info.cpu_model, "governor": info.governor,
                "python": f"{info.python} ({access.python or access.env.venv_python})",
                "onnxruntime": info.onnxruntime, "numpy": info.numpy,
                "runner peak RSS": f"{info.peak_rss_bytes / 2**20:.1f} MiB",
                "round trip": f"{result.round_trip_s[0] * 1000:.1f} ms (probe batch of 2)",
                "timing basis": info.timing_basis}
