"""The device runner's wire format and request loop, in process (real onnxruntime, tiny models)."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from onnx import TensorProto, helper, save

from devices.runner import hil_runner as wire

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_frame_layout_is_length_type_payload() -> None:
    frame = wire.encode_frame(wire.INFER, b"abc")
    assert frame == struct.pack(">I", 4) + b"I" + b"abc"
    assert wire.read_frame(io.BytesIO(frame + wire.encode_frame(wire.QUIT))) == (wire.INFER, b"abc")


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([[0.5, -1.25], [3e-8, 7.0]], dtype=np.float32),
    np.array([1, -2, 2**40], dtype=np.int64),
    np.zeros((0, 16), dtype=np.uint8),
])
def test_arrays_round_trip(array: np.ndarray) -> None:
    payload = wire.encode_array(array) + b"tail"
    decoded, end = wire.decode_array(payload)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert np.array_equal(decoded, array)
    assert payload[end:] == b"tail"


def test_array_header_is_dtype_ndim_big_endian_dims_then_little_endian_data() -> None:
    encoded = wire.encode_array(np.array([[1, 256]], dtype=np.int64))
    assert encoded[:2] == bytes([3, 2])
    assert encoded[2:10] == struct.pack(">II", 1, 2)
    assert encoded[10:] == (1).to_bytes(8, "little") + (256).to_bytes(8, "little")


def test_malformed_input_is_refused() -> None:
    with pytest.raises(wire.RunnerError, match="dtype float64 cannot be sent"):
        wire.encode_array(np.zeros(2))
    with pytest.raises(wire.RunnerError, match="unknown array dtype code 9"):
        wire.decode_array(bytes([9, 0]))
    with pytest.raises(wire.RunnerError, match="truncated array data"):
        wire.decode_array(wire.encode_array(np.zeros((4, 4), np.float32))[:-1])
    with pytest.raises(wire.RunnerError, match="ended inside a frame"):
        wire.read_frame(io.BytesIO(wire.encode_frame(wire.INFER, b"abcdef")[:-2]))
    with pytest.raises(wire.RunnerError, match="frame length 0"):
        wire.read_frame(io.BytesIO(b"\x00\x00\x00\x00"))
    assert wire.read_frame(io.BytesIO(b"")) is None


def test_cpu_model_from_cpuinfo() -> None:
    assert wire.cpu_model("processor : 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.50GHz\n") == "Intel(R) Xeon(R) CPU @ 2.50GHz"
    assert wire.cpu_model(PI4_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4, Cortex-A72"
    assert wire.cpu_model("") == "unknown"


def _model(tmp_path, name: str, shape_in: list, shape_out: list, op: str = "Flatten") -> str:
    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    save(model, str(path))
    return str(path)


def _serve(model: wire.Model, *frames: bytes) -> list[tuple[int, bytes]]:
    out = io.BytesIO()
    status = wire.serve(model, io.BytesIO(b"".join(frames)), out)
    assert status == 0
    stream, replies = io.BytesIO(out.getvalue()), []
    while (frame := wire.read_frame(stream)) is not None:
        replies.append(frame)
    return replies


def test_node_role_feeds_pixel_over_256_and_rounds_codes_half_to_even(tmp_path) -> None:
    # A "node encoder" that outputs its input pixels/256 flattened: code = rint(value / 2**-2) = rint(p / 64)
    model = wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", -2, threads=1)
    views = np.array([[[0, 32], [96, 255]], [[64, 160], [224, 31]]], dtype=np.uint8)
    replies = _serve(model, wire.encode_frame(wire.INFER, wire.encode_array(views)), wire.encode_frame(wire.QUIT))
    assert [kind for kind, _ in replies] == [wire.RESULT]
    codes, end = wire.decode_array(replies[0][1])
    ns, end = wire.decode_array(replies[0][1], end)
    # 32/64 = 0.5 -> 0 and 96/64 = 1.5 -> 2 and 160/64 = 2.5 -> 2 (ties to even); 255/64 = 3.98 -> 4
    assert codes.tolist() == [[0, 0, 2, 4], [1, 2, 4, 0]]
    assert codes.dtype == np.uint8 and ns.dtype == np.int64 and ns.shape == (2,) and (ns > 0).all()
    assert model.inferences == 2


def test_bad_requests_get_error_replies_and_the_runner_serves_on(tmp_path) -> None:
    model = wire.Model(_model(tmp_path, "id", ["batch", 3], ["batch", 3], op="Identity"), "gateway", None, threads=1)
    replies = _serve(
        model,
        wire.encode_frame(wire.INFER, wire.encode_array(np.zeros((2, 5), np.float32))),  # wrong width
        wire.encode_frame(ord("Z")),
        wire.encode_frame(wire.INFER, wire.encode_array(np.array([[1, 2, 3]], np.uint8))),
        wire.encode_frame(wire.INFO),
    )
    kinds = [kind for kind, _ in replies]
    assert kinds == [wire.ERROR, wire.ERROR, wire.RESULT, wire.INFO]
    assert b"has shape [None, 3], request gives [2, 5]" in replies[0][1]
    assert b"unknown message type 0x5a" in replies[1][1]
    logits, _ = wire.decode_array(replies[2][1])
    assert logits.dtype == np.float32 and logits.tolist() == [[1.0, 2.0, 3.0]]
    info = json.loads(replies[3][1])
    assert info["inferences"] == 1 and info["peak_rss_bytes"] > 0 and info["governor"]


def test_node_role_needs_a_code_exponent(tmp_path) -> None:
    with pytest.raises(wire.RunnerError, match="needs --code-exponent"):
        wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", None, threads=1)


def _flat_check(views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check vectors for the "flat" node (code = rint(pixel / 64)), as an export writes them."""
    return views, np.rint(views.reshape(len(views), -1) / 64.0).astype(np.uint8)


def _batch_dependent_model(tmp_path) -> str:
    """A "node encoder" that is exact one view at a time but not in a batch: it adds one code
    (2^-2) to every value when the batch has more than one view, as a kernel that mixed up a
    batch's rows might."""
    consts = [helper.make_tensor("quarter", TensorProto.FLOAT, [], [0.25]),
              helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
              helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
              helper.make_tensor("zero", TensorProto.INT64, [], [0])]
    nodes = [helper.make_node("Flatten", ["x"], ["flat"]),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["batch"]),
             helper.make_node("Cast", ["batch"], ["batch_f"], to=TensorProto.FLOAT),
             helper.make_node("Min", ["batch_f", "two"], ["capped"]),
             helper.make_node("Sub", ["capped", "one"], ["several"]),  # 0 for one view, 1 for more
             helper.make_node("Mul", ["several", "quarter"], ["shift"]),
             helper.make_node("Add", ["flat", "shift"], ["y"])]
    graph = helper.make_graph(nodes, "batch-dependent",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "batch-dependent.onnx"
    save(model, str(path))
    return str(path)


def _result(reply: tuple[int, bytes]) -> tuple[np.ndarray, np.ndarray]:
    kind, payload = reply
    assert kind == wire.RESULT
    codes, end = wire.decode_array(payload)
    ns, end = wire.decode_array(payload, end)
    assert end == len(payload)
    return codes, ns


VIEWS = np.random.default_rng(0).integers(0, 256, (10, 2, 2)).astype(np.uint8)


def test_a_self_checked_node_runs_a_batch_in_batch_calls_and_says_so(tmp_path) -> None:
    model = wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", -2, threads=1,
                       check=_flat_check(VIEWS))
    batching = model.describe()["batching"]
    assert batching == {"batch_calls": True, "views_per_call": wire.ONNX_CALL_VIEWS, "timing": wire.BATCH_TIMING,
                        "checked_batch": {"views": wire.CHECK_BATCH, "mismatched_codes": 0}}
    replies = _serve(model, wire.encode_frame(wire.INFER, wire.encode_array(VIEWS)),
                     wire.encode_frame(wire.INFER, wire.encode_array(VIEWS[:1])))
    (codes, ns), (one_code, one_ns) = _result(replies[0]), _result(replies[1])
    assert (codes == _flat_check(VIEWS)[1]).all() and (one_code == codes[:1]).all()
    assert ns.shape == (1,) and one_ns.shape == (1,) and ns[0] > 0 and model.inferences == 11
    per_view, shared = wire.per_inference_ns(ns, len(VIEWS))
    assert (shared == len(VIEWS)).all() and per_view.sum() == ns[0] and per_view.max() - per_view.min() <= 1


def test_a_node_whose_batched_calls_are_wrong_runs_view_by_view(tmp_path) -> None:
    model = wire.Model(_batch_dependent_model(tmp_path), "node", -2, threads=1, check=_flat_check(VIEWS))
    described = model.describe()
    assert described["self_check"]["tried"] == [{"configuration": "qcdq-unfused", "mismatched_codes": 0}]
    assert described["batching"]["batch_calls"] is False and described["batching"]["views_per_call"] == 1
    assert described["batching"]["timing"] == wire.PER_VIEW_TIMING
    assert described["batching"]["checked_batch"]["mismatched_codes"] == wire.CHECK_BATCH * 4  # every value off
    codes, ns = _result(_serve(model, wire.encode_frame(wire.INFER, wire.encode_array(VIEWS)))[0])
    assert (codes == _flat_check(VIEWS)[1]).all() and ns.shape == (len(VIEWS),) and (ns > 0).all()


def test_without_check_vectors_or_a_free_batch_axis_every_view_is_its_own_call(tmp_path) -> None:
    unchecked = wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", -2, threads=1)
    fixed = wire.Model(_model(tmp_path, "fixed", [1, 1, 2, 2], [1, 4]), "node", -2, threads=1,
                       check=_flat_check(VIEWS))
    for model in (unchecked, fixed):
        assert model.describe()["batching"]["batch_calls"] is False
        _, ns = model.infer(VIEWS)
        assert ns.shape == (len(VIEWS),)
    assert fixed.describe()["batching"]["checked_batch"] == {"views": 0, "mismatched_codes": None}


def test_per_inference_ns_reads_both_timing_forms() -> None:
    ns, shared = wire.per_inference_ns(np.array([5, 7, 9]), 3)
    assert ns.tolist() == [5, 7, 9] and shared.tolist() == [1, 1, 1]
    ns, shared = wire.per_inference_ns(np.array([1000]), 3)  # one call for three views: 333.3 ns each
    assert ns.tolist() == [334, 333, 333] and shared.tolist() == [3, 3, 3]  # adding up to the 1000 ns
    assert wire.per_inference_ns(np.array([42]), 1)[1].tolist() == [1]
    with pytest.raises(wire.RunnerError, match=r"\[2\] timings for a batch of 3 views"):
        wire.per_inference_ns(np.array([1, 2]), 3)


def test_a_batch_larger_than_one_call_is_still_timed_once(tmp_path) -> None:
    model = wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", -2, threads=1,
                       check=_flat_check(VIEWS))
    views = np.resize(VIEWS, (wire.ONNX_CALL_VIEWS * 2 + 5, 2, 2))  # three session.run calls
    codes, ns = model.infer(views)
    assert (codes == _flat_check(views)[1]).all() and ns.shape == (1,)


def _stored(start: int, count: int, batch: int) -> bytes:
    return wire.encode_frame(wire.INFER_STORED, wire.STORED_RANGE.pack(start, count, batch))


@pytest.mark.parametrize("checked", [True, False], ids=["batch-calls", "view-by-view"])
def test_stored_views_encode_in_ranges_as_infer_would(tmp_path, checked: bool) -> None:
    views = np.resize(VIEWS, (23, 2, 2))
    model = wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", -2, threads=1,
                       check=_flat_check(VIEWS) if checked else None)
    replies = _serve(model, wire.encode_frame(wire.STORE, wire.encode_array(views)),
                     _stored(0, 23, 5), _stored(3, 7, 7), _stored(22, 1, 4))
    assert replies[0] == (wire.STORE, b'{"inputs": 23}')
    (codes, ns), (mid, mid_ns), (last, last_ns) = (_result(r) for r in replies[1:])
    golden = _flat_check(views)[1]
    assert (codes == golden).all() and (mid == golden[3:10]).all() and (last == golden[22:]).all()
    if checked:  # batches of 5, 5, 5, 5 and 3 views, each timed as a whole; one view: its own call
        assert ns.shape == (5,) and mid_ns.shape == (1,) and last_ns.shape == (1,)
        per_view, shared = wire.range_inference_ns(ns, 23, 5)
        assert shared.tolist() == [5] * 20 + [3] * 3 and per_view.sum() == ns.sum()
    else:
        assert ns.shape == (23,) and mid_ns.shape == (7,)
        assert wire.range_inference_ns(ns, 23, 5)[1].tolist() == [1] * 23
    assert (ns > 0).all() and model.inferences == 31


def test_range_inference_ns_reads_both_timing_forms() -> None:
    ns, shared = wire.range_inference_ns(np.array([1000, 30, 7]), 9, 4)  # batches of 4, 4 and 1
    assert ns.tolist() == [250] * 4 + [8, 8, 7, 7] + [7] and shared.tolist() == [4] * 8 + [1]
    ns, shared = wire.range_inference_ns(np.arange(1, 10), 9, 4)  # every view its own call
    assert ns.tolist() == list(range(1, 10)) and shared.tolist() == [1] * 9
    with pytest.raises(wire.RunnerError, match=r"\[2\] timings for 9 inputs in batches of 4"):
        wire.range_inference_ns(np.array([1, 2]), 9, 4)
    with pytest.raises(wire.RunnerError, match="a range of 0 inputs"):
        wire.range_inference_ns(np.array([]), 0, 4)


def test_bad_stored_requests_get_error_replies_and_keep_what_was_stored(tmp_path) -> None:
    model = wire.Model(_model(tmp_path, "flat", ["batch", 1, 2, 2], ["batch", 4]), "node", -2, threads=1)
    replies = _serve(
        model,
        _stored(0, 1, 1),  # nothing stored yet
        wire.encode_frame(wire.STORE, wire.encode_array(VIEWS)),
        wire.encode_frame(wire.STORE, wire.encode_array(np.zeros((3, 3, 3), np.uint8))),  # wrong view shape
        wire.encode_frame(wire.STORE, wire.encode_array(np.zeros((0, 2, 2), np.uint8))),
        _stored(5, 6, 2),  # past the end
        _stored(0, 0, 2),
        _stored(0, 2, 0),
        wire.encode_frame(wire.INFER_STORED, b"\x00" * 8),
        _stored(8, 2, 2),  # still the first views
    )
    kinds = [kind for kind, _ in replies]
    assert kinds == [wire.ERROR, wire.STORE] + [wire.ERROR] * 6 + [wire.RESULT]
    assert b"no stored inputs (send STORE first)" in replies[0][1]
    assert b"request gives [1, 1, 3, 3]" in replies[2][1]
    assert b"nothing to store" in replies[3][1]
    assert b"inputs [5, 11) in batches of 2: 10 are stored" in replies[4][1]
    assert b"carries 12 bytes (start, count, batch), not 8" in replies[7][1]
    assert (_result(replies[8])[0] == _flat_check(VIEWS)[1][8:]).all()
