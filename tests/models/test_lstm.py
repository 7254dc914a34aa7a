"""LSTM node encoders with real Brevitas QuantLSTM and the real irish-wind data: the numpy
golden model equals Brevitas on every step's hidden state and on the codes (q = 2, 3, 4, 8; 256
real windows; randomized small shapes), the fast training forward equals Brevitas' forward bit
for bit and its gradients to float rounding, and the smoke experiment trains, caches and
exports through the pipeline with a head that decodes the offset-binary codes."""
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from quant_models import golden
from quant_models.datasets import load_experiment_dataset
from quant_models.experiment import load_experiment, parse_experiment
from quant_models.intlstm import IO_EXPONENT, sigmoid_table, tanh_table
from quant_models.lstm import LstmEncoder, batched_code_values, sequence
from quant_models.model import build_model
from quant_models.manifest import load_node_models
from quant_models.packing import unpack_codes
from quant_models.partition import make_partition
from quant_models.pipeline import get_exported, get_trained_model, golden_metrics
from quant_models.training import one_thread, train, views_as_tensors

REPO = Path(__file__).resolve().parents[2]
WINDOWS = 256
WIND = {"name": "w", "dataset": "irish-wind", "partition": "sites:VAL|SHA|DUB|MAL",
        "encoder": {"lstm": [40, 9]}, "code": {"values": 36, "bits": 4}, "head": {"hidden": [20]}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Brevitas' QuantLSTM runs many tiny ops: a second thread only waits (see training.train)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def wind():
    exp = parse_experiment(WIND, "w.yaml")
    data = load_experiment_dataset(exp)
    return data, make_partition(exp.partition, data.image_shape)


@torch.no_grad()
def _stress(enc: LstmEncoder, seed: int) -> None:
    """Parameters of a trained-looking encoder that reach every corner: larger weights and
    biases (gates and cell state saturate), other gate, cell and code grids."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in enc.named_parameters():
        if name.endswith("scaling_impl.value"):
            p.add_(torch.randint(-1, 2, (), generator=gen).float())
        else:
            p.mul_(1.0 + 3.0 * torch.rand((), generator=gen))


def _check_equal(enc: LstmEncoder, windows: np.ndarray, node: int = 0) -> np.ndarray:
    """Golden == Brevitas (eval forward) on every layer's every step and on the codes."""
    enc.eval()
    views = torch.from_numpy(windows).float().unsqueeze(1) * 2.0 ** IO_EXPONENT
    ienc = enc.to_integer(node)
    traces = golden.trace(ienc, windows)
    with torch.no_grad():
        for layer, (tr, h) in enumerate(zip(traces, enc.hidden_states(views))):
            brevitas = torch.round(h / 2.0 ** IO_EXPONENT).to(torch.int64).numpy()
            mismatch = int((brevitas != tr.hidden).sum())
            assert mismatch == 0, f"layer {layer}: {mismatch} hidden-state values differ"
        codes = enc.codes(views).numpy()
    golden_codes = golden.encode(ienc, windows)
    assert (golden_codes == codes).all()
    return golden_codes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_golden_equals_brevitas_on_real_windows(wind, bits):
    data, partition = wind
    windows = partition.views(data.test_x[:WINDOWS])[1]  # SHA
    torch.manual_seed(bits)
    enc = LstmEncoder([40, 9], (1, 50), bits)
    _stress(enc, bits)
    codes = _check_equal(enc, windows)
    assert codes.shape == (WINDOWS, 9) and codes.max() < 1 << bits
    assert len(np.unique(codes)) > 2, "codes barely vary: the test would show little"


@pytest.mark.parametrize("seed", range(5))
def test_golden_equals_brevitas_on_random_small_shapes(seed):
    rng = np.random.default_rng(seed)
    rows, steps, bits = int(rng.integers(1, 4)), int(rng.integers(2, 9)), int(rng.choice([2, 3, 4, 8]))
    sizes = [int(n) for n in rng.integers(1, 7, int(rng.integers(1, 4)))]
    torch.manual_seed(seed)
    enc = LstmEncoder(sizes, (rows, steps), bits)
    _stress(enc, 100 + seed)
    _check_equal(enc, rng.integers(-128, 128, (64, rows, steps)).astype(np.int8), node=seed)


def test_tables_equal_brevitas_quantizers():
    enc = LstmEncoder([3], (1, 2), 4)
    cell = enc.lstms[0].layers[0][0].cell
    sig = cell.input_sigmoid_quant.fused_activation_quant_proxy
    tanh = cell.cell_tanh_quant.fused_activation_quant_proxy
    for exponent in range(-10, 3):
        domain = torch.arange(-128, 128, dtype=torch.float32) * 2.0 ** exponent
        with torch.no_grad():
            s = torch.round(sig(domain)[0] / 2.0 ** -8).to(torch.int64).numpy()
            t = torch.round(tanh(domain)[0] / 2.0 ** -7).to(torch.int64).numpy()
        assert (s == sigmoid_table(exponent)).all(), exponent
        assert (t == tanh_table(exponent)).all(), exponent


@pytest.mark.parametrize("sizes,rows,steps,bits", [([40, 9], 1, 20, 4), ([5, 3, 4], 2, 7, 2), ([6], 3, 5, 8)])
def test_fast_training_forward_is_brevitas(wind, sizes, rows, steps, bits):
    """Forward values identical, gradients equal to float rounding, and a few Adam steps later
    the parameters agree to float rounding (not bit for bit: gradients are summed in another order)."""
    data, _ = wind
    windows = np.ascontiguousarray(data.train_x[:48, :rows, :steps])
    views = torch.from_numpy(windows).float().unsqueeze(1) * 2.0 ** IO_EXPONENT
    weights = torch.linspace(-1, 1, sizes[-1])
    torch.manual_seed(0)
    fast = LstmEncoder(sizes, (rows, steps), bits)
    _stress(fast, 7)
    slow = LstmEncoder(sizes, (rows, steps), bits)
    slow.load_state_dict(fast.state_dict())
    slow.fast_training = False
    assert fast.fast_plan() is not None
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (fast, slow)]
    for step in range(3):
        outputs = []
        for model, opt in zip((fast, slow), optimizers):
            model.train()
            opt.zero_grad()
            hidden = model.hidden_states(views)
            codes = model(views)
            loss = (codes * weights).sum() + sum((h * 0.01).sum() for h in hidden)
            loss.backward()
            outputs.append((hidden, codes, {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None}))
        (hf, cf, gf), (hs, cs, gs) = outputs
        assert all(torch.equal(a, b) for a, b in zip(hf, hs)), f"step {step}: hidden states differ"
        assert torch.equal(cf, cs), f"step {step}: codes differ"
        assert gf.keys() == gs.keys()
        # A scale's gradient sums sum(g * code) - sum(g * x / s) over every step and unit, with much
        # cancellation: compare it against the size of the model's gradients, not its own.
        overall = max(float(g.abs().max()) for g in gs.values())
        for name in gs:
            diff = float((gf[name] - gs[name]).abs().max())
            assert diff <= 1e-3 * float(gs[name].abs().max()) + 1e-6 * overall, f"step {step}: gradient of {name}"
        for opt in optimizers:
            opt.step()
    for (name, a), b in zip(fast.named_parameters(), slow.parameters()):
        assert float((a - b).detach().abs().max()) < 1e-5, name


def test_nodes_batched_in_one_recurrence_equal_brevitas_per_node():
    """Training runs all nodes' LSTMs as one batched recurrence (nodes with 2 and 1 sites)."""
    exp = parse_experiment({**WIND, "partition": "sites:VAL+SHA|DUB|MAL", "encoder": {"lstm": [5, 9]},
                            "code": {"values": 27, "bits": 3}, "series": {"window": 12}}, "b.yaml")
    data = load_experiment_dataset(exp)
    partition = make_partition(exp.partition, data.image_shape)
    torch.manual_seed(1)
    model = build_model(exp, partition, data.classes)
    for k, enc in enumerate(model.node_encoders()):
        _stress(enc, 50 + k)
    model.train()
    views = views_as_tensors(partition, data.train_x[:40])
    labels = torch.from_numpy(data.train_y[:40])
    assert batched_code_values(model.node_encoders(), views) is not None
    grads = []
    for fast in (True, False):
        LstmEncoder.fast_training = fast
        try:
            model.zero_grad()
            values = model.code_values(views)
            torch.nn.functional.cross_entropy(model.head(values), labels).backward()
        finally:
            LstmEncoder.fast_training = True
        grads.append((values.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (vf, gf), (vs, gs) = grads
    assert torch.equal(vf, vs)
    overall = max(float(g.abs().max()) for g in gs.values())
    for name in gs:
        assert float((gf[name] - gs[name]).abs().max()) <= 1e-3 * float(gs[name].abs().max()) + 1e-6 * overall, name


def test_smoke_experiment_trains_caches_and_exports():
    exp = load_experiment(REPO / "experiments/wind-lstm-smoke.yaml")
    ex = get_exported(exp)
    m = ex.trained.cached.metrics
    assert m["golden_code_match"] == 1.0 and m["golden_test_accuracy"] == m["test_accuracy"]
    assert m["test_accuracy"] > 0.08  # 20 classes: chance is 0.05
    assert m["node_costs"][0]["macs"] == 16 * 4 * 9 * (1 + 9)
    assert not get_trained_model(exp).trained_now  # the cache holds it now
    man = ex.manifest
    assert man["bits_per_inference"] == 4 * 9 * 4 and man["payload_bytes_per_inference"] == 4 * 5
    assert [n["kind"] for n in man["nodes"]] == ["lstm-encoder"] * 4
    assert man["nodes"][0]["code_zero_point"] == 8 and man["raw_bits_per_inference"] == 8 * 4 * 16
    models = load_node_models(ex.directory)
    assert [n.sha256() for n in models] == [n.sha256() for n in ex.node_models] and len(models) == 4
    assert ex.encoders == []
    data, partition, model = ex.trained.data, ex.trained.cached.partition, ex.trained.cached.model
    views = partition.views(data.test_x)
    codes = []
    for node, (ienc, view) in enumerate(zip(models, views)):
        check = np.load(ex.directory / man["nodes"][node]["check_vectors"])
        assert (golden.encode(ienc, check["views"]) == check["codes"]).all()
        packed = golden.encode_packed(ienc, view)
        codes.append(unpack_codes(packed, 9, 4))
    head = ort.InferenceSession(str(ex.directory / "head.onnx"))
    logits = head.run(None, {"codes": np.concatenate(codes, axis=1).astype(np.float32)})[0]
    with torch.no_grad():
        torch_pred = model(views_as_tensors(partition, data.test_x)).argmax(1).numpy()
    assert (logits.argmax(1) == torch_pred).mean() > 0.999  # float32 head: ties may fall either way
    assert float((logits.argmax(1) == data.test_y).mean()) == pytest.approx(m["golden_test_accuracy"], abs=1e-3)


@pytest.mark.parametrize("scheme,bits", [("centralized", 8), ("ours", "float"), ("fdml", 3)])
def test_other_schemes_train_and_export(tmp_path, scheme, bits):
    exp = parse_experiment({**WIND, "scheme": scheme, "encoder": {"lstm": [6, 9]}, "code": {"values": 36, "bits": bits},
                            "series": {"window": 8}, "training": {"epochs": 1, "train_samples": 128}}, "s.yaml")
    data = load_experiment_dataset(exp)
    result = train(exp, data)
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    from quant_models.export import export_model

    man = export_model(result.model, result.partition, tmp_path, scheme=scheme, bits=bits).manifest
    head = ort.InferenceSession(str(tmp_path / "head.onnx"))
    total = sum(n["code_len"] for n in man["nodes"])
    assert head.run(None, {"codes": np.zeros((2, total), np.float32)})[0].shape == (2, 20)
    if scheme == "centralized":
        assert man["nodes"][0]["kind"] == "raw" and man["nodes"][0]["code_zero_point"] == 128
        assert total == 4 * 8
    golden_side = golden_metrics(result.model, result.partition, data.test_x, data.test_y)
    assert (golden_side["golden_code_match"] == 1.0) if scheme == "fdml" else golden_side == {}


def test_sequence_layout():
    views = torch.arange(12.0).reshape(1, 1, 3, 4)  # 3 sites x 4 steps
    assert sequence(views)[0, 1].tolist() == [1.0, 5.0, 9.0]  # step 1: one value per site


def test_revive_resets_the_code_scale():
    enc = LstmEncoder([4, 3], (1, 5), 3)
    scaling = enc.code.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value
    with torch.no_grad():
        scaling.sub_(12.0)  # a collapsed scale: every code clamps
    assert enc.code_scale() < 2.0 ** -10
    enc.revive()
    assert enc.code_scale() == 2.0 ** -2 and enc.fast_plan() is not None
