"""The device runner's integer LSTM (devices/runner/hil_int_lstm.py, its own reading of the spec in
quant_models/intlstm.py) against the golden model on random shapes, and an LSTM node served by
the runner's request loop (self-check at load, windows as bytes, one call per batch)."""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from devices.runner import hil_int_lstm as device_lstm
from devices.runner import hil_runner as wire
from harness.config.profiles import get_profile
from harness.targets.contract import open_node_target
from quant_models import golden
from quant_models.intlstm import IntLstmEncoder, IntLstmLayer
from quant_models.manifest import CHECK_VECTORS, write_manifest
from tests.unit.test_intlstm import random_encoder


def write_lstm_export(directory: Path, encoder: IntLstmEncoder, rng: np.random.Generator) -> None:
    """One quantized LSTM node as the exporter writes it: integer parameters, check vectors
    (all 0, all -128, all 127, then random windows) with their golden codes, a manifest entry."""
    encoder.save(directory / f"node{encoder.node}.int.json")
    shape = encoder.input_shape
    check = np.concatenate([np.full((1, *shape), v, np.int8) for v in (0, -128, 127)]
                           + [rng.integers(-128, 128, (CHECK_VECTORS - 3, *shape)).astype(np.int8)])
    np.savez_compressed(directory / f"node{encoder.node}.check.npz", views=check, codes=golden.encode(encoder, check))
    entry = {"node": encoder.node, "kind": "lstm-encoder", "view_shape": list(shape), "code_len": encoder.code_len,
             "code_bits": encoder.code_bits, "int_params": f"node{encoder.node}.int.json",
             "check_vectors": f"node{encoder.node}.check.npz", "sha256": encoder.sha256(),
             "code_exponent": encoder.code_exponent, "code_zero_point": encoder.code_zero_point}
    write_manifest(directory, {"format": "hilbench-export/2", "nodes": [entry]})  # type: ignore[typeddict-item]


def _random_case(seed: int) -> tuple[IntLstmEncoder, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, steps, bits = int(rng.integers(1, 5)), int(rng.integers(1, 24)), int(rng.choice([2, 3, 4, 8]))
    sizes = [int(n) for n in rng.integers(1, 14, int(rng.integers(1, 4)))]
    # small weights too: gates that do not all saturate exercise the tables' middle
    enc = random_encoder(rng, rows, sizes, steps, bits, node=seed, weight_scale=int(rng.choice([8, 40, 127])))
    # fine cell grids (shift of i x g below 8) make the inner saturation of i x g matter
    enc = replace(enc, layers=tuple(replace(layer, cell_exponent=int(rng.integers(-10, -3))) for layer in enc.layers))
    windows = rng.integers(-128, 128, (int(rng.integers(1, 70)), rows, steps)).astype(np.int8)
    return enc, windows


@pytest.mark.parametrize("seed", range(12))
def test_device_lstm_gives_the_golden_codes(seed: int) -> None:
    enc, windows = _random_case(seed)
    model = device_lstm.parse(json.loads(json.dumps(enc.to_dict())))
    expected = golden.encode(enc, windows)
    codes = device_lstm.encode(model, windows)
    assert codes.dtype == np.uint8 and codes.shape == expected.shape
    assert (codes == expected).all()
    assert (device_lstm.encode(model, windows.view(np.uint8)) == expected).all()  # the wire's bytes
    assert (device_lstm.encode(model, windows[:1]) == expected[:1]).all()
    assert device_lstm.encode(model, windows[:0]).shape == (0, enc.code_len)


def test_rounding_half_to_even_by_hand() -> None:
    v = np.array([5, 7, -5, -7, 6, -6, 4, 3], dtype=np.int64)
    assert device_lstm.rne(v, 1).tolist() == [2, 4, -2, -4, 3, -3, 2, 2]  # 2.5 2, 3.5 4, -2.5 -2, -3.5 -4, 1.5 2
    assert device_lstm.rne(np.array([12, 20, -12, 13]), 3).tolist() == [2, 2, -2, 2]  # 1.5 2, 2.5 2, -1.5 -2
    assert device_lstm.rne(np.array([3, -3]), 0).tolist() == [3, -3]
    assert device_lstm.rne(np.array([3, -3]), -2).tolist() == [12, -12]
    wide = np.arange(-5000, 5000, dtype=np.int64)
    for shift in (1, 2, 5, 9):
        assert (device_lstm.rne(wide, shift) == golden.rne_shift(wide, shift)).all()


def test_inner_saturation_of_i_times_g_by_hand() -> None:
    """One unit, one input; i, f, o held at 255 by their biases, g = +-1 following the input.
    Cell grid 2^-10, so i x g shifts right by only 5 and must saturate before the sum:
    step 1 (x = -128): g = -128, i*g = -1020 -> -128, c = -128, h = rne(255 x -16, 8) = -16;
    step 2 (x = 127):  g = 127, f*c = rne(-32640, 8) = -127.5 -> -128 (to even),
                       i*g = rne(32385, 5) = 1012 -> 127, c = -128 + 127 = -1, tanh(-1/1024) -> 0, h = 0.
    Without the inner saturation c would be 127 and h 16. Code grid 2^-7, 4 bits: code = 0 + 8."""
    gate_bias = 127 << 7  # acc grid 2^-11, gate grid 2^-4: a = 127, sigmoid(7.9) -> 255
    layer = IntLstmLayer(np.array([0, 0, 127, 0], np.int8).reshape(4, 1, 1), np.zeros((4, 1, 1), np.int8),
                         np.array([gate_bias, gate_bias, 0, gate_bias], np.int32).reshape(4, 1),
                         (-4, -4, -4, -4), (-4, -4, -4, -4), -10)
    enc = IntLstmEncoder(0, (1, 2), (layer,), 4, -7)
    enc.check()
    window = np.array([[[-128, 127]]], np.int8)
    assert golden.trace(enc, window)[0].hidden[0, :, 0].tolist() == [-16, 0]
    assert golden.trace(enc, window)[0].cell[0, 0] == -1
    assert golden.encode(enc, window).tolist() == [[8]]
    assert device_lstm.encode(device_lstm.parse(enc.to_dict()), window).tolist() == [[8]]


def test_bad_files_are_refused_with_the_reason(tmp_path) -> None:
    enc = random_encoder(np.random.default_rng(1), 2, [3], 4, 4)
    d = enc.to_dict()
    with pytest.raises(device_lstm.IntLstmError, match="not a hilbench-int-lstm/1 file"):
        device_lstm.parse({**d, "format": "hilbench-int-encoder/1"}, "x.json")
    huge = json.loads(json.dumps(d))
    huge["layers"][0]["bias"] = [2 ** 31 - 1] * 12
    with pytest.raises(device_lstm.IntLstmError, match="layer 0: its accumulator can reach .* outside int32"):
        device_lstm.parse(huge, "x.json")
    short = json.loads(json.dumps(d))
    short["layers"][0]["tables"]["gate_f"] = short["layers"][0]["tables"]["gate_f"][:255]
    with pytest.raises(device_lstm.IntLstmError, match="gate_f: a table must be 256 uint8 values"):
        device_lstm.parse(short, "x.json")
    no_layers = {k: v for k, v in d.items() if k != "layers"}
    with pytest.raises(device_lstm.IntLstmError, match="malformed integer LSTM .*KeyError"):
        device_lstm.parse(no_layers, "x.json")
    model = device_lstm.parse(d)
    with pytest.raises(device_lstm.IntLstmError, match=r"takes int8 windows \[B, 2, 4\], got int16"):
        device_lstm.encode(model, np.zeros((1, 2, 4), np.int16))


def _lstm_files(tmp_path, enc: IntLstmEncoder, wrong_codes: bool = False) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
    path = tmp_path / "node0.int.json"
    enc.save(path)
    rng = np.random.default_rng(5)
    views = np.concatenate([np.full((1, *enc.input_shape), v, np.int8) for v in (0, -128, 127)]
                           + [rng.integers(-128, 128, (13, *enc.input_shape)).astype(np.int8)])
    codes = golden.encode(enc, views)
    return str(path), (views, codes ^ 1 if wrong_codes else codes)


def test_runner_serves_an_lstm_node_self_checked_one_call_per_batch(tmp_path) -> None:
    enc = random_encoder(np.random.default_rng(2), 3, [10, 6], 12, 4, weight_scale=40)
    path, check = _lstm_files(tmp_path, enc)
    model = wire.IntLstmModel(path, check)
    described = model.describe()
    assert described["configuration"]["name"] == "int-lstm-numpy"
    assert "onnxruntime cannot run" in described["configuration"]["description"]
    assert described["self_check"] == {"vectors": 16, "fallback": False,
                                       "tried": [{"configuration": "int-lstm-numpy", "mismatched_codes": 0}]}
    assert described["batching"]["batch_calls"] is True and described["batching"]["views_per_call"] is None
    assert described["batching"]["checked_batch"] == {"views": wire.CHECK_BATCH, "mismatched_codes": 0}
    windows = np.random.default_rng(9).integers(-128, 128, (40, 3, 12)).astype(np.int8)
    out = io.BytesIO()
    requests = [wire.encode_frame(wire.INFER, wire.encode_array(windows[:37].view(np.uint8))),
                wire.encode_frame(wire.INFER, wire.encode_array(windows[37:38].view(np.uint8))),
                wire.encode_frame(wire.QUIT)]
    assert wire.serve(model, io.BytesIO(b"".join(requests)), out) == 0
    replies = io.BytesIO(out.getvalue())
    expected = golden.encode(enc, windows)
    for views in (37, 1):
        kind, payload = wire.read_frame(replies)  # type: ignore[misc]
        assert kind == wire.RESULT
        codes, end = wire.decode_array(payload)
        ns, _ = wire.decode_array(payload, end)
        assert ns.shape == (1,) and ns[0] > 0  # one call: the whole batch, or the one view
        done = 0 if views == 37 else 37
        assert (codes == expected[done:done + views]).all()
    assert model.inferences == 38


def test_an_lstm_whose_check_vectors_disagree_refuses_to_start(tmp_path) -> None:
    enc = random_encoder(np.random.default_rng(4), 1, [5], 6, 3, weight_scale=40)
    path, check = _lstm_files(tmp_path, enc, wrong_codes=True)
    with pytest.raises(wire.RunnerError, match="integer LSTM's codes differ from the export's golden check vectors"):
        wire.IntLstmModel(path, check)


def test_runner_command_line_runs_an_lstm_node(tmp_path, monkeypatch) -> None:
    """main() as the device starts it: --kind int-lstm, HELLO, then a batch, through real pipes."""
    import os

    enc = random_encoder(np.random.default_rng(6), 2, [7], 9, 2, weight_scale=40)
    path, (views, codes) = _lstm_files(tmp_path, enc)
    np.savez(tmp_path / "check.npz", views=views, codes=codes)
    request_r, request_w = os.pipe()
    os.write(request_w, wire.encode_frame(wire.INFER, wire.encode_array(views.view(np.uint8)))
             + wire.encode_frame(wire.QUIT))
    os.close(request_w)
    reply_r, reply_w = os.pipe()
    saved_stdout = os.dup(1)
    os.dup2(reply_w, 1)
    os.close(reply_w)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(os.fdopen(request_r, "rb")))
    for variable in wire.BLAS_THREAD_VARIABLES:  # main() sets them for its BLAS: restore them after
        monkeypatch.setenv(variable, os.environ.get(variable, ""))
    try:
        status = wire.main(["--model", path, "--kind", "int-lstm", "--role", "node",
                            "--check", str(tmp_path / "check.npz")])
    finally:
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    assert status == 0
    with os.fdopen(reply_r, "rb") as replies:
        kind, hello = wire.read_frame(replies)  # type: ignore[misc]
        assert kind == wire.HELLO
        facts = json.loads(hello)
        assert facts["kind"] == "int-lstm" and facts["configuration"]["name"] == "int-lstm-numpy"
        assert facts["input_shape"] == [None, 2, 9] and facts["outputs"] == [{"name": "codes", "shape": [None, 7]}]
        kind, payload = wire.read_frame(replies)  # type: ignore[misc]
        assert kind == wire.RESULT and (wire.decode_array(payload)[0] == codes).all()


def test_local_node_runs_an_lstm_through_the_runner_code(tmp_path) -> None:
    """The host's ``local`` node kind, given the run engine's NodeModel: the runner's IntLstmModel,
    self-checked, one view per call, with a basis that says numpy."""
    rng = np.random.default_rng(17)
    enc = random_encoder(rng, 2, [6, 4], 10, 3, weight_scale=80)
    write_lstm_export(tmp_path, enc, rng)
    windows = rng.integers(-128, 128, (12, 2, 10)).astype(np.int8)
    with open_node_target(get_profile("host-onnxruntime"), enc, tmp_path) as node:
        replies = node.infer_batch(windows)
        extra = node.info.extra
    assert [r.code for r in replies] == [bytes(p) for p in golden.encode_packed(enc, windows)]
    assert extra["configuration"]["name"] == "int-lstm-numpy" and extra["self_check"]["vectors"] == CHECK_VECTORS
    assert all("integer LSTM in numpy" in r.latency_basis and r.device_count and r.device_count > 0 for r in replies)
