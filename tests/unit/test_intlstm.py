"""The integer LSTM: its costs, tables and JSON form, and the golden model against an
independent scalar reading of the spec in quant_models.intlstm (Python ints, one unit at a time)
on randomized small shapes. Equality with Brevitas is tests/models/test_lstm.py."""
import math

import numpy as np
import pytest

from harness.core.errors import ModelError
from quant_models import golden
from quant_models.intlstm import (IntLstmEncoder, IntLstmLayer, lstm_costs, sigmoid_table, tanh_table)
from quant_models.manifest import load_node_models
from quant_models.packing import pack_codes, unpack_codes


def test_paper_encoder_costs():
    costs = lstm_costs(1, [40, 9], 50)  # the notes' LSTM(1->40) -> LSTM(40->9) over 50 samples
    assert (costs.macs, costs.elementwise_multiplies, costs.table_lookups) == (416_200, 7_350, 12_250)
    assert costs.weight_bytes == 8_324 + 4 * 196  # int8 weights + int32 biases: 9.1 KB
    assert costs.table_bytes == 2 * 5 * 256
    assert costs.state_bytes == 3 * 49 + 1
    one = lstm_costs(3, [2], 4)  # by hand: 4 gates x 2 units x (3 + 2) inputs per step
    assert (one.macs, one.elementwise_multiplies, one.table_lookups, one.weight_bytes) == (160, 24, 40, 40 + 32)


def test_tables_by_hand():
    s = sigmoid_table(-4)  # entry a + 128 = rne(256 / (1 + exp(-a / 16)))
    assert s.dtype == np.uint8 and s[128] == 128 and s[0] == 0 and s[255] == 255
    assert s[128 + 16] == round(256 / (1 + math.exp(-1)))  # 187
    t = tanh_table(-5)
    assert t.dtype == np.int8 and t[128] == 0 and t[0] == -128 and t[255] == 127
    assert t[128 + 32] == round(math.tanh(1) * 128)  # 97
    assert (np.diff(s.astype(int)) >= 0).all() and (np.diff(t.astype(int)) >= 0).all()


def _rne(v: int, s: int) -> int:
    if s <= 0:
        return v << -s
    q, r = divmod(v, 1 << s)
    half = 1 << (s - 1)
    return q + (r > half or (r == half and q % 2 == 1))


def _sat(v: int) -> int:
    return max(-128, min(127, v))


def _reference(enc: IntLstmEncoder, window: np.ndarray) -> tuple[list[list[list[int]]], list[int]]:
    """Per layer the h of every step, and the codes: the spec, one scalar at a time."""
    xs = [[int(window[r, t]) for r in range(window.shape[0])] for t in range(window.shape[1])]
    hidden_per_layer = []
    for layer in enc.layers:
        hsz = layer.hidden_size
        tables = [t.astype(int).tolist() for t in layer.gate_tables()]
        ctanh = layer.cell_tanh_table().astype(int).tolist()
        h, c, seq = [0] * hsz, [0] * hsz, []
        for x in xs:
            new_h, new_c = [], []
            for j in range(hsz):
                gates = []
                for g in range(4):
                    acc = sum(int(layer.weight_x[g, j, k]) * x[k] for k in range(len(x)))
                    acc += sum(int(layer.weight_h[g, j, k]) * h[k] for k in range(hsz)) + int(layer.bias[g, j])
                    gates.append(tables[g][_sat(_rne(acc, layer.gate_shifts[g])) + 128])
                i, f, gg, o = gates
                cj = _sat(_sat(_rne(f * c[j], 8)) + _sat(_rne(i * gg, layer.cell_product_shift)))
                new_c.append(cj)
                new_h.append(_sat(_rne(o * ctanh[cj + 128], 8)))
            h, c = new_h, new_c
            seq.append(h)
        hidden_per_layer.append(seq)
        xs = seq
    half = 1 << (enc.code_bits - 1)
    codes = [max(-half, min(half - 1, _rne(v, enc.code_shift))) + half for v in hidden_per_layer[-1][-1]]
    return hidden_per_layer, codes


def random_encoder(rng: np.random.Generator, rows: int, sizes: list[int], steps: int, bits: int, node: int = 0,
                   weight_scale: int = 127) -> IntLstmEncoder:
    layers, n_in = [], rows
    for h in sizes:
        layers.append(IntLstmLayer(
            rng.integers(-weight_scale, weight_scale + 1, (4, h, n_in)).astype(np.int8),
            rng.integers(-weight_scale, weight_scale + 1, (4, h, h)).astype(np.int8),
            rng.integers(-3000, 3000, (4, h)).astype(np.int32),
            tuple(int(e) for e in rng.integers(-10, -6, 4)), tuple(int(e) for e in rng.integers(-6, -2, 4)),
            int(rng.integers(-7, -3))))
        n_in = h
    enc = IntLstmEncoder(node, (rows, steps), tuple(layers), bits, int(rng.integers(-bits, 0)))
    enc.check()
    return enc


@pytest.mark.parametrize("seed", range(6))
def test_golden_equals_the_scalar_spec(seed):
    rng = np.random.default_rng(seed)
    rows, steps, bits = int(rng.integers(1, 4)), int(rng.integers(2, 7)), int(rng.choice([2, 3, 4, 8]))
    sizes = [int(n) for n in rng.integers(1, 6, int(rng.integers(1, 3)))]
    enc = random_encoder(rng, rows, sizes, steps, bits)
    windows = rng.integers(-128, 128, (5, rows, steps)).astype(np.int8)
    traces = golden.trace(enc, windows)
    codes = golden.encode(enc, windows)
    for b in range(len(windows)):
        hidden, ref_codes = _reference(enc, windows[b])
        for layer, tr in enumerate(traces):
            assert tr.hidden[b].tolist() == hidden[layer]
        assert codes[b].tolist() == ref_codes
    assert codes.max() < 1 << bits
    # the bytes a node sends, and the same codes from two's-complement bytes
    assert (unpack_codes(golden.encode_packed(enc, windows), enc.code_len, bits) == codes).all()
    assert (golden.encode(enc, windows.view(np.uint8)) == codes).all()
    assert (pack_codes(codes, bits) == golden.encode_packed(enc, windows)).all()


def test_json_round_trip_and_hash(tmp_path):
    enc = random_encoder(np.random.default_rng(1), 2, [5, 3], 7, 4, node=2)
    path = tmp_path / "node2.int.json"
    enc.save(path)
    back = IntLstmEncoder.load(path)
    assert back.sha256() == enc.sha256() and back.code_len == 3 and back.node == 2
    assert all((a.weight_x == b.weight_x).all() and a.gate_exponents == b.gate_exponents
               for a, b in zip(enc.layers, back.layers))
    d = enc.to_dict()
    assert d["layers"][0]["tables"]["gate_i"] == sigmoid_table(enc.layers[0].gate_exponents[0]).tolist()
    assert d["costs"]["macs"] == enc.macs and d["code_zero_point"] == 8
    d["layers"][1]["tables"]["cell_tanh"][0] = 5
    with pytest.raises(ModelError, match="tables differ"):
        IntLstmEncoder.from_dict(d, "x.json")
    with pytest.raises(ModelError, match="not a hilbench-int-lstm/1 file"):
        IntLstmEncoder.from_dict({"format": "hilbench-int-encoder/1"}, "x.json")


def test_checks_catch_bad_parameters():
    rng = np.random.default_rng(0)
    enc = random_encoder(rng, 2, [4], 3, 4)
    bad = IntLstmEncoder(0, (3, 3), enc.layers, 4, -2)
    with pytest.raises(ModelError, match="layer 0 takes 2 inputs"):
        bad.check()
    with pytest.raises(ModelError, match="expects int8 windows"):
        golden.encode(enc, np.zeros((1, 2, 4), np.int8))
    huge = IntLstmLayer(enc.layers[0].weight_x, enc.layers[0].weight_h, np.full((4, 4), 2 ** 24, np.int32),
                        (-8,) * 4, (-4,) * 4, -5)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=">= 2\\^24 units"):
        IntLstmEncoder(0, (2, 3), (huge,), 4, -2).check()


def test_manifest_loads_lstm_nodes(tmp_path):
    enc = random_encoder(np.random.default_rng(3), 1, [4], 5, 3)
    enc.save(tmp_path / "node0.int.json")
    (tmp_path / "manifest.json").write_text(
        '{"nodes": [{"node": 0, "kind": "lstm-encoder", "int_params": "node0.int.json"}, {"node": 1, "kind": "raw"}]}')
    (model,) = load_node_models(tmp_path)
    assert isinstance(model, IntLstmEncoder) and model.sha256() == enc.sha256()
