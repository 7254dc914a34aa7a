"""Why node encoders run in onnxruntime the way they do: the default QDQ fusion is not exact on
every CPU, and the runner's configurations are.

A hand-built QCDQ graph (as the Brevitas export writes them) whose int8 products cannot be
summed pairwise in int16: pixels 255 and weights +127 make every pair 64,770 > 32,767. With its
default optimizations onnxruntime fuses the pattern into u8 x s8 kernels; on x86 CPUs without
VNNI those use VPMADDUBSW, which saturates such pairs (onnxruntime's quantization docs warn of
it), so the default configuration gives a wrong value there and the right one on VNNI and ARM.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from devices.runner import hil_runner as runner

PIXEL_SCALE, WEIGHT_SCALE = 2.0 ** -8, 2.0 ** -7


def _qcdq_probe(kind: str) -> tuple[bytes, np.ndarray, float]:
    """(model bytes, input, exact output) of x -> Q/DQ -> Conv or Gemm with int8 weights +127
    through DQ -> Q/DQ out, the pattern onnxruntime fuses into QLinearConv / QGemm."""
    if kind == "conv5x5":  # the node encoder's first layer: one input channel, 5x5
        x_shape, w, k = [1, 1, 5, 5], np.full((4, 1, 5, 5), 127, np.int8), 25
        op = helper.make_node("Conv", ["xd", "wd"], ["y"], kernel_shape=[5, 5])
        y_shape = [1, 4, 1, 1]
    else:  # gemm: the node encoder's FC layer
        x_shape, w, k = [1, 32], np.full((4, 32), 127, np.int8), 32
        op = helper.make_node("Gemm", ["xd", "wd"], ["y"], transB=1)
        y_shape = [1, 4]
    acc = k * 255 * 127 * PIXEL_SCALE * WEIGHT_SCALE
    out_scale = 2.0 ** int(np.ceil(np.log2(acc / 255)))  # the exact value fits the uint8 output
    exact = float(np.rint(acc / out_scale)) * out_scale  # what the output Q/DQ makes of it
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in (
        ("xs", np.float32(PIXEL_SCALE)), ("ws", np.float32(WEIGHT_SCALE)), ("ys", np.float32(out_scale)),
        ("uz", np.uint8(0)), ("sz", np.int8(0)), ("w", w))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "uz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "uz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "sz"], ["wd"]), op,
             helper.make_node("QuantizeLinear", ["y", "ys", "uz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "uz"], ["out"])]
    graph = helper.make_graph(nodes, f"probe-{kind}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), np.full(x_shape, 255 * PIXEL_SCALE, np.float32), exact


def _run(model: bytes, x: np.ndarray, configuration: runner.Configuration) -> np.ndarray:
    session = ort.InferenceSession(model, sess_options=runner.session_options(configuration, threads=1),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("kind", ["conv5x5", "gemm"])
def test_the_runners_qcdq_configurations_are_exact_where_products_cannot_pair_in_int16(kind):
    model, x, exact = _qcdq_probe(kind)
    for configuration in runner.NODE_CONFIGURATIONS:
        if configuration.model == "export":
            assert (_run(model, x, configuration) == exact).all(), configuration.name


def _saturating_cpu() -> str | None:
    """Why this CPU's u8 x s8 kernels saturate, or None if they do not."""
    flags = set(runner.cpu_flags())
    if "avx2" not in flags:
        return None
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return None
    return "x86 with AVX2 and no VNNI: u8 x s8 pairs are summed in saturating int16 (VPMADDUBSW)"


@pytest.mark.skipif(_saturating_cpu() is None,
                    reason=f"this CPU (int8 flags: {' '.join(runner.cpu_flags()) or 'none'}) has exact int8 "
                           "kernels (VNNI, or not x86), so the default fusion cannot be shown to saturate here")
@pytest.mark.parametrize("kind", ["conv5x5", "gemm"])
def test_the_default_fusion_saturates_on_x86_without_vnni(kind):
    model, x, exact = _qcdq_probe(kind)
    assert not (_run(model, x, runner.ORT_DEFAULT_FUSED) == exact).all(), (
        f"{_saturating_cpu()}, yet the fused default gave the exact value: the reason the runner avoids "
        "the default configuration no longer holds on this onnxruntime")


def test_cpu_flags_keep_only_the_int8_relevant_ones():
    text = "processor: 0\nflags\t\t: fpu sse avx2 avx512bw avx512_vnni sha_ni\n"
    assert runner.cpu_flags(text) == ["avx2", "avx512_vnni", "avx512bw"]
    arm = "processor: 0\nFeatures\t: fp asimd evtstrm aes asimddp i8mm\n"
    assert runner.cpu_flags(arm) == ["asimd", "asimddp", "i8mm"]
