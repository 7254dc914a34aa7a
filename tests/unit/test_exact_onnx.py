"""The integer model lowered to float32 ONNX gives the golden codes, on integer parameters chosen
to be hard: full-scale weights, every input 0 or 255, ties in every rounding, odd shapes."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from devices.runner import hil_runner as runner
from harness.core.errors import ModelError
from quant_models import golden
from quant_models.exact_onnx import (CODE_MAX_KEY, CODE_MIN_KEY, FLOAT32_EXACT, INT16_MAX, accumulation_bound,
                                     codes_from_output, int8_fc_safe, lower_to_onnx, output_range)
from quant_models.intparams import ConvOp, FcOp, IntEncoder, MaxPoolOp, Requant

LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


def _encoder(rng: np.random.Generator, view=(14, 14), channels=8, kernel=5, pool=2, codes=16, bits=4,
             full_scale=False, conv_weight=127, conv_bias=(-5000, 5000)) -> IntEncoder:
    pad = kernel // 2
    w1 = np.full((channels, 1, kernel, kernel), 127, np.int8) if full_scale else \
        rng.integers(-conv_weight, conv_weight + 1, (channels, 1, kernel, kernel)).astype(np.int8)
    conv = ConvOp(w1, rng.integers(*conv_bias, channels).astype(np.int32), pad, Requant(9, 0, 255))
    h = (view[0] + 2 * pad - kernel + 1) // pool
    w = (view[1] + 2 * pad - kernel + 1) // pool
    fc_w = rng.integers(-40, 41, (codes, channels * h * w)).astype(np.int8)
    fc = FcOp(fc_w, rng.integers(-3000, 3000, codes).astype(np.int32), Requant(11, 0, (1 << bits) - 1))
    return IntEncoder(0, view, -8, (conv, MaxPoolOp(pool), fc), bits, -2)


def _views(rng: np.random.Generator, shape, n=64) -> np.ndarray:
    extremes = [np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)]
    binary = (rng.random((n // 2, *shape)) < 0.5).astype(np.uint8) * 255
    uniform = rng.integers(0, 256, (n // 2, *shape)).astype(np.uint8)
    return np.concatenate([np.stack(extremes), binary, uniform])


def _codes(model, views: np.ndarray, level) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    values = session.run(None, {"view": (views.astype(np.float32) / 256)[:, None]})[0]
    meta = session.get_modelmeta().custom_metadata_map
    return codes_from_output(values, int(meta[CODE_MIN_KEY]), int(meta[CODE_MAX_KEY]))


@pytest.mark.parametrize("seed, shape, conv_clip", [
    (0, {}, "Clip"),
    (1, {"view": (13, 11), "kernel": 3, "channels": 5, "codes": 7}, "Relu"),
    (2, {"kernel": 1, "channels": 1, "pool": 3, "bits": 1}, "Relu"),
    (3, {"kernel": 7, "channels": 3, "bits": 8}, "Clip"),
    (4, {"full_scale": True, "channels": 4, "bits": 2}, "Clip"),
    (5, {"conv_weight": 8, "conv_bias": (-500, 500)}, "Relu"),  # the upper bound provably idle
    (6, {"conv_weight": 1, "conv_bias": (7000, 8000)}, None),  # both bounds idle: no op at all
])
def test_exact_lowering_equals_golden_at_every_optimization_level(seed, shape, conv_clip):
    rng = np.random.default_rng(seed)
    encoder = _encoder(rng, **shape)
    views = _views(rng, encoder.input_shape)
    expected = golden.encode(encoder, views)
    assert len(np.unique(expected)) > 1
    model = lower_to_onnx(encoder)
    clips = {n.op_type for n in model.graph.node} & {"Clip", "Relu"}
    assert clips == ({conv_clip} if conv_clip else set())
    conv = encoder.ops[0]
    lo, hi = output_range(conv, 0, 255)
    needed = "Clip" if hi > conv.requant.clip_max else "Relu" if lo < conv.requant.clip_min else None
    assert needed == conv_clip
    for level in LEVELS:
        got = _codes(model, views, level)
        assert (got == expected).all(), f"{level}: {(got != expected).sum()} codes differ"


def test_output_range_bounds_the_codes_before_the_clip():
    conv = ConvOp(np.array([[[[2, -3]]]], np.int8), np.array([4], np.int32), 0, Requant(1, 0, 255))
    # acc = 2a - 3b + 4 for a, b in [0, 255]: from -761 to 514; times 2^-1, rounded half to even
    assert output_range(conv, 0, 255) == (-380, 257)


def test_the_runner_picks_the_exact_model_first_and_checks_it(tmp_path):
    rng = np.random.default_rng(5)
    encoder = _encoder(rng)
    views = _views(rng, encoder.input_shape, 16)
    path = tmp_path / "exact.onnx"
    path.write_bytes(lower_to_onnx(encoder).SerializeToString())
    assert runner.NODE_CONFIGURATIONS[0].model == "exact"
    session = ort.InferenceSession(str(path), sess_options=runner.session_options(runner.NODE_CONFIGURATIONS[0], 1),
                                   providers=["CPUExecutionProvider"])
    values = session.run(None, {"view": (views.astype(np.float32) / 256)[:, None]})[0]
    assert (codes_from_output(values, 0, (1 << encoder.code_bits) - 1) == golden.encode(encoder, views)).all()
    assert (runner.CODE_MIN_KEY, runner.CODE_MAX_KEY) == (CODE_MIN_KEY, CODE_MAX_KEY)


def test_accumulators_beyond_float32_are_refused():
    rng = np.random.default_rng(6)
    encoder = _encoder(rng, channels=16)  # the FC sees 16 x 7 x 7 = 784 codes of up to 255
    conv, pool, fc = encoder.ops
    wide = FcOp(np.full((4, fc.weight.shape[1]), 127, np.int8), np.zeros(4, np.int32), fc.requant)
    big = IntEncoder(0, encoder.input_shape, -8, (conv, pool, wide), 4, -2)
    assert accumulation_bound(big) == 255 * 127 * fc.weight.shape[1] >= FLOAT32_EXACT
    with pytest.raises(ModelError, match="beyond float32's exact integers"):
        lower_to_onnx(big)
    assert accumulation_bound(encoder) < FLOAT32_EXACT


def _write(tmp_path, name: str, encoder: IntEncoder, codes_in_graph: bool = False) -> str:
    """The exact lowering as a file; ``codes_in_graph``: with the last Round and Clip appended, so
    the file's output is the codes themselves (a stand-in for a QCDQ export, code exponent 0)."""
    model = lower_to_onnx(encoder)
    if codes_in_graph:
        graph = model.graph
        graph.node.extend([
            helper.make_node("Round", ["code_values"], ["rounded"]),
            helper.make_node("Clip", ["rounded", "code_lo", "code_hi"], ["codes"])])
        graph.initializer.extend([numpy_helper.from_array(np.float32(0), "code_lo"),
                                  numpy_helper.from_array(np.float32((1 << encoder.code_bits) - 1), "code_hi")])
        graph.output[0].name = "codes"
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_the_self_check_falls_back_when_the_first_configuration_is_wrong_and_says_so(tmp_path):
    rng = np.random.default_rng(7)
    good = _encoder(rng)
    conv, pool, fc = good.ops
    broken_fc = FcOp(fc.weight, fc.bias + 2048, fc.requant)  # one wrong bias: a wrong "exact" lowering
    broken = IntEncoder(0, good.input_shape, -8, (conv, pool, broken_fc), good.code_bits, good.code_exponent)
    views = _views(rng, good.input_shape, 16)
    check = (views, golden.encode(good, views))
    # the "export" here is the good lowering too (code exponent 0): what matters is the order
    model = runner.Model(_write(tmp_path, "good.onnx", good, codes_in_graph=True), "node", 0, threads=1,
                         exact_path=_write(tmp_path, "broken.onnx", broken), check=check)
    described = model.describe()
    assert described["configuration"]["name"] == "qcdq-unfused"
    tried = described["self_check"]["tried"]
    assert tried[0]["configuration"] == "exact-float" and tried[0]["mismatched_codes"] > 0
    assert tried[1] == {"configuration": "qcdq-unfused", "mismatched_codes": 0}
    assert described["self_check"] == {"vectors": len(views), "tried": tried, "fallback": True}
    codes, _ = model.infer(views)
    assert (codes == check[1]).all() and model.inferences == len(views)


def test_the_runner_refuses_to_serve_when_no_configuration_matches(tmp_path):
    rng = np.random.default_rng(8)
    encoder = _encoder(rng)
    views = _views(rng, encoder.input_shape, 8)
    wrong = golden.encode(encoder, views) ^ 1  # the golden codes of some other model
    path = _write(tmp_path, "m.onnx", encoder)
    export = _write(tmp_path, "export.onnx", encoder, codes_in_graph=True)
    with pytest.raises(runner.RunnerError, match=r"no exact configuration: every candidate's codes differ .*"
                                                 r"exact-float.*qcdq-unfused.*qcdq-unoptimized.*CPU int8 flags"):
        runner.Model(export, "node", 0, threads=1, exact_path=path, check=(views, wrong))


def test_an_fc_is_int8_only_where_no_pair_of_products_can_pass_int16() -> None:
    fc = FcOp(np.array([[64, -64, 3]], np.int8), np.zeros(1, np.int32), Requant(8, 0, 15))
    assert 2 * 255 * 64 <= INT16_MAX < 2 * 255 * 65
    assert int8_fc_safe(fc, 0, 255)
    assert not int8_fc_safe(FcOp(np.array([[65, 1]], np.int8), fc.bias, fc.requant), 0, 255)
    assert int8_fc_safe(FcOp(np.array([[65, 1]], np.int8), fc.bias, fc.requant), 0, 252)  # 2 x 252 x 65 = 32760
    assert not int8_fc_safe(fc, -1, 255) and not int8_fc_safe(fc, 0, 256)  # codes must fit uint8


def _saturating_encoder(fc_weight: int) -> IntEncoder:
    """A white view drives every conv output, so every FC input, to 255; every FC weight is
    +-fc_weight, so each pair of products an int8 kernel adds in int16 is +-2 x 255 x fc_weight."""
    conv = ConvOp(np.full((2, 1, 3, 3), 127, np.int8), np.full(2, 2000, np.int32), 1, Requant(4, 0, 255))
    signs = np.where(np.arange(2 * 3 * 3) % 4 < 2, 1, -1)
    fc_w = np.stack([signs * fc_weight, -signs * fc_weight, np.full(18, fc_weight)]).astype(np.int8)
    fc = FcOp(fc_w, np.array([0, 100, -100], np.int32), Requant(12, 0, 255))
    return IntEncoder(0, (6, 6), -8, (conv, MaxPoolOp(2), fc), 8, 0)


@pytest.mark.parametrize("fc_weight, int8", [(64, True), (65, False)])
def test_int8_fc_at_the_saturation_edge_gives_golden_codes(fc_weight: int, int8: bool) -> None:
    """At the bound, every pair of products sums to +-32,640: a u8 x s8 kernel that summed pairs
    in int16 with one code more would saturate. Past it, the layer stays a Round and a float Gemm."""
    rng = np.random.default_rng(fc_weight)
    encoder = _saturating_encoder(fc_weight)
    views = _views(rng, encoder.input_shape)
    ops = {n.op_type for n in lower_to_onnx(encoder).graph.node}
    assert ({"QuantizeLinear", "MatMulIntegerToFloat"} <= ops) is int8 and ({"Round", "Gemm"} <= ops) is not int8
    expected = golden.encode(encoder, views)
    assert len(np.unique(expected)) > 1
    model = lower_to_onnx(encoder)
    for level in LEVELS:
        assert (_codes(model, views, level) == expected).all(), level
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                   sess_options=runner.session_options(runner.NODE_CONFIGURATIONS[0], 1))
    values = session.run(None, {"view": (views.astype(np.float32) / 256)[:, None]})[0]
    assert (codes_from_output(values, 0, 255) == expected).all()
