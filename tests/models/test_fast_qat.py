"""The fast QAT forward (quant_models/fast_qat.py) trains the same model as Brevitas' modules, bit
for bit: parameters and gradients after every step, and the integer export at the end."""
import numpy as np
import pytest
import torch

from quant_models.datasets import load_dataset
from quant_models.experiment import parse_experiment
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
        _train_side_by_side(bits, scheme, layers)
    finally:
        torch.set_num_threads(previous)


def _train_side_by_side(bits, scheme, layers):
    exp, data = _experiment(bits, scheme, layers), load_dataset("mnist")
    brevitas, brevitas_opt, partition = _build(exp, data, fast=False)
    fast, fast_opt, _ = _build(exp, data, fast=True)
    assert all(enc._fast_training_plan() is not None for enc in fast.node_encoders()), \
        "fast_qat no longer recognises the quantizers this project builds (Brevitas changed?)"
    views = views_as_tensors(partition, data.train_x[:STEPS * BATCH])
    labels = torch.from_numpy(data.train_y[:STEPS * BATCH].astype(np.int64))
    loss_fn = SCHEMES.get(exp.scheme).loss
    brevitas.train(), fast.train()
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        losses = []
        for model, opt in ((brevitas, brevitas_opt), (fast, fast_opt)):
            loss = loss_fn(model, [v[batch] for v in views], labels[batch], exp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == losses[1], f"step {step}: loss {losses[0]!r} != {losses[1]!r}"
        for (name, a), b in zip(brevitas.named_parameters(), fast.parameters()):
            assert torch.equal(a, b), f"step {step}: parameter {name} differs"
            assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad)), \
                f"step {step}: gradient of {name} differs"
    brevitas.eval(), fast.eval()
    assert _int_export(brevitas) == _int_export(fast)


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
