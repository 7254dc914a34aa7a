import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from quant_models.datasets import load_dataset
from quant_models.model import build_model
from quant_models.partition import make_partition
from quant_models.training import encoder_health, train, views_as_tensors

from tests.conftest import small_experiment


def test_short_training_on_real_mnist_reaches_a_sane_floor(exported):
    metrics = exported(4, samples=4000).trained.cached.metrics
    assert metrics["test_accuracy"] > 0.80, metrics["test_accuracy"]
    assert metrics["dead_encoders"] == [] and metrics["test_samples"] == 2000


def test_training_is_deterministic_for_a_seed():
    exp = small_experiment(4, samples=256)
    data = load_dataset("mnist")
    a, b = train(exp, data), train(exp, data)
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300)
    return proc


def test_second_train_is_a_cache_hit(tmp_path):
    first = _cli("train", "experiments/smoke.yaml", "--json", "--cache-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    second = _cli("train", "experiments/smoke.yaml", "--json", "--cache-dir", str(tmp_path))
    a, b = json.loads(first.stdout.splitlines()[-1]), json.loads(second.stdout.splitlines()[-1])
    assert a["trained_now"] is True and b["trained_now"] is False
    assert a["cache_dir"] == b["cache_dir"] and a["test_accuracy"] == b["test_accuracy"]
    assert (tmp_path / a["cache_dir"].split("/")[-1] / "train.log").read_text().startswith("epoch 0")


def test_cli_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ndataset: mnist\ncode: {values: 64, bits: 7}\n")
    proc = _cli("train", str(bad))
    assert proc.returncode == 2
    assert f"{bad}: field 'code.bits': q = 7 is not supported" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dead_encoder_is_detected_and_revived():
    exp = small_experiment(4)
    data = load_dataset("mnist")
    partition = make_partition("quadrants", (28, 28))
    model = build_model(exp, partition, 10)
    views = views_as_tensors(partition, data.test_x[:256])
    with torch.no_grad():
        model.encoders[2].code_stage.fc.bias.fill_(-1000.0)
    health = encoder_health(model, views)
    assert [h.node for h in health if h.dead] == [2]
    assert health[2].all_zero_samples == 1.0 and health[2].constant_dimensions == 16
    model.encoders[2].revive()
    assert not encoder_health(model, views)[2].dead
    with torch.no_grad():  # saturated: every code at the top level, the same for every input
        model.encoders[1].code_stage.fc.bias.fill_(1000.0)
    assert [h.node for h in encoder_health(model, views) if h.dead] == [1]


@pytest.mark.parametrize("scheme, bits, values", [
    ("fdml", 4, 16), ("fdml-scores", 4, 40), ("centralized", 8, 784), ("autoencoder", 4, 64), ("ours", "float", 64),
    ("ours", 3, 64),
])
def test_every_scheme_trains_and_its_head_exports(exported, scheme, bits, values):
    ex = exported(bits, scheme=scheme, values=values, samples=2000 if scheme == "autoencoder" else 600)
    model, partition, data = ex.trained.cached.model, ex.trained.cached.partition, ex.trained.data
    assert ex.trained.cached.metrics["test_accuracy"] > 0.15  # learns (chance: 0.10) in 10 steps
    views = views_as_tensors(partition, data.test_x[:64])
    with torch.no_grad():
        codes = torch.cat([e.codes(v) if e.quantized else e(v) for e, v in zip(model.encoders, views)], 1)
        expected = model(views).numpy()
    head = ort.InferenceSession(str(ex.directory / "head.onnx"))
    logits = head.run(None, {"codes": codes.float().numpy()})[0]
    assert np.allclose(logits, expected, atol=1e-4)
    man = ex.export.manifest
    assert man["bits_per_inference"] == {"fdml": 64, "fdml-scores": 160, "centralized": 6272, "autoencoder": 256}.get(
        scheme, 64 * (32 if bits == "float" else bits))
