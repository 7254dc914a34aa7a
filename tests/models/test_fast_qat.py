"""The fast QAT forward (quant_models/fast_qat.py) trains the same model as Brevitas' modules, bit
for bit: parameters and gradients after every step (compared as bit patterns, so even the sign of
a zero counts), and the integer export at the end."""
import numpy as np
import pytest
import torch

from quant_models.datasets import load_dataset
from quant_models.experiment import parse_experiment
from quant_models.fast_qat import round_keep_bounds
from quant_models.model import SCHEMES, NodeEncoder, build_model
from quant_models.partition import make_partition
from quant_models.training import views_as_tensors

STEPS, BATCH = 24, 64


def _experiment(bits, scheme="ours", layers=None):
    doc = {"name": f"fast-qat-{scheme}-{bits}", "dataset": "mnist", "scheme": scheme,
           "code": {"values": 64 if scheme != "fdml-scores" else 40, "bits": bits},
           "training": {"epochs": 1, "train_samples": STEPS * BATCH, "batch_size": BATCH, "learning_rate": 0.002}}
    if layers is not None:
        doc["encoder"] = {"layers": layers, "activation_bits": 4}
    return parse_experiment(doc, "<fast-qat test>")


def _build(exp, data, fast):
    torch.manual_seed(0)
    partition = make_partition(exp.partition, data.image_shape)
    model = build_model(exp, partition, data.classes)
    for enc in model.node_encoders():
        if isinstance(enc, NodeEncoder):
            enc.fast_training = fast  # the instance attribute shadows the class default
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.Adam(params, lr=exp.training.learning_rate), partition


def _int_export(model):
    return [enc.to_integer(i).to_dict() for i, enc in enumerate(model.node_encoders())]


def _bits(t):
    return t.detach().view(torch.int32)


def _assert_same(brevitas, fast, when):
    for (name, a), b in zip(brevitas.named_parameters(), fast.parameters()):
        assert torch.equal(_bits(a), _bits(b)), f"{when}: parameter {name} differs"
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(_bits(a.grad), _bits(b.grad))), \
            f"{when}: gradient of {name} differs"


class _SideBySide:
    """The same experiment built twice, Brevitas forward and fast forward, on the same batches."""

    def __init__(self, bits, scheme="ours", layers=None):
        self.exp, data = _experiment(bits, scheme, layers), load_dataset("mnist")
        self.brevitas, self.brevitas_opt, partition = _build(self.exp, data, fast=False)
        self.fast, self.fast_opt, _ = _build(self.exp, data, fast=True)
        assert all(enc._fast_training_plan() is not None for enc in self.fast.node_encoders()), \
            "fast_qat no longer recognises the quantizers this project builds (Brevitas changed?)"
        self.views = views_as_tensors(partition, data.train_x[:STEPS * BATCH])
        self.labels = torch.from_numpy(data.train_y[:STEPS * BATCH].astype(np.int64))
        self.loss_fn = SCHEMES.get(self.exp.scheme).loss
        self.brevitas.train(), self.fast.train()

    def pairs(self):
        return (self.brevitas, self.brevitas_opt), (self.fast, self.fast_opt)

    def loss(self, model, step):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        return self.loss_fn(model, [v[batch] for v in self.views], self.labels[batch], self.exp)


@pytest.mark.parametrize("bits,scheme,layers,threads", [
    (4, "ours", None, 1), (4, "ours", None, 2), (1, "ours", None, 1), (2, "ours", None, 1), (8, "ours", None, 1),
    (2, "fdml", None, 2), (4, "fdml-scores", None, 1),
    (4, "ours", [{"conv": {"channels": 8, "kernel": 3}}, {"conv": {"channels": 16, "kernel": 3, "padding": 0}},
                 {"maxpool": 2}, {"fc": {"units": 32}}], 1),
])
def test_fast_forward_trains_the_same_model_bit_for_bit(bits, scheme, layers, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the thread count changes float reductions: both paths at each
    try:
        _train_side_by_side(_SideBySide(bits, scheme, layers))
    finally:
        torch.set_num_threads(previous)


def _train_side_by_side(run, steps=STEPS):
    for step in range(steps):
        losses = []
        for model, opt in run.pairs():
            loss = run.loss(model, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == losses[1], f"step {step}: loss {losses[0]!r} != {losses[1]!r}"
        _assert_same(run.brevitas, run.fast, f"step {step}")
    run.brevitas.eval(), run.fast.eval()
    assert _int_export(run.brevitas) == _int_export(run.fast)


def test_tied_weight_maxima_share_the_scale_gradient_as_in_brevitas():
    """max|w| with several maxima (of both signs): autograd splits the scale's gradient evenly."""
    run = _SideBySide(4)
    with torch.no_grad():
        for model in (run.brevitas, run.fast):
            for enc in model.node_encoders():
                for layer in (enc.stages[0].conv, enc.code_stage.fc):
                    w = layer.weight.view(-1)
                    top = w.abs().max()
                    w[:3] = torch.stack([top, -top, top])
    _train_side_by_side(run, steps=3)


def test_graphs_alive_across_steps_keep_their_saved_tensors():
    """The fast path reuses its scratch tensors only once autograd has freed the graph that saved
    them: two forwards before one backward, and a backward run twice (retain_graph), still give
    Brevitas' gradients."""
    run = _SideBySide(4)
    for model, opt in run.pairs():
        opt.zero_grad(set_to_none=True)
        first, second = run.loss(model, 0), run.loss(model, 1)
        second.backward(retain_graph=True)
        first.backward()
        second.backward()
    _assert_same(run.brevitas, run.fast, "after three backward passes")


@pytest.mark.parametrize("lo,hi", [(0, 1), (0, 3), (0, 15), (0, 255), (-8, 7), (-7, 7), (-128, 127),
                                   (-2.0 ** 31, 2.0 ** 31)])
def test_round_keep_bounds_match_round_half_to_even(lo, hi):
    below, above = round_keep_bounds(lo, hi)
    f32 = np.float32
    near = []
    for edge in (f32(lo) - f32(0.5), f32(lo), f32(hi), f32(hi) + f32(0.5)):
        x = edge
        for _ in range(4):
            x = np.nextafter(x, f32(-np.inf))
        for _ in range(9):
            near.append(x)
            x = np.nextafter(x, f32(np.inf))
    t = np.array(near, dtype=np.float32)
    assert np.array_equal((t > below) & (t < above), (np.rint(t) >= lo) & (np.rint(t) <= hi))
    # as the backward uses them: torch's float32 compare in hardtanh_backward
    kept = torch.ops.aten.hardtanh_backward(torch.ones(len(t)), torch.from_numpy(t), below, above)
    assert torch.equal(kept.bool(), torch.from_numpy((np.rint(t) >= lo) & (np.rint(t) <= hi)))


def test_evaluation_and_no_grad_keep_the_brevitas_forward():
    exp, data = _experiment(4), load_dataset("mnist")
    model, _, partition = _build(exp, data, fast=True)
    enc = model.node_encoders()[0]
    view = views_as_tensors(partition, data.test_x[:8])[0]
    enc.eval()
    enc(view)
    enc.train()
    with torch.no_grad():
        enc(view)
    assert enc._fast_plan is False, "the fast plan was built outside training"
    enc(view)
    assert enc._fast_plan is not None and enc._fast_plan is not False
