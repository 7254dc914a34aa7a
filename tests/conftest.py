"""Small real trainings shared by the model and emulated tests (real MNIST, real Brevitas, real
onnxruntime). torch is imported only when a test asks for a model, so unit tests never load it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from quant_models.experiment import Experiment, parse_experiment

if TYPE_CHECKING:
    from quant_models.export import ExportResult
    from quant_models.pipeline import TrainedModel


@dataclass
class Exported:
    exp: Experiment
    trained: TrainedModel
    export: ExportResult

    @property
    def directory(self) -> Path:
        return self.export.directory


def small_experiment(bits, scheme="ours", values=64, samples=1500, epochs=1, **training) -> Experiment:
    return parse_experiment({
        "name": f"test-{scheme}-q{bits}", "dataset": "mnist", "scheme": scheme,
        "code": {"values": values, "bits": bits},
        "training": {"epochs": epochs, "train_samples": samples, "learning_rate": 0.002, **training},
    }, f"<test {scheme} q={bits}>")


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """exported(bits, scheme=..., ...) -> Exported, trained once per session and configuration."""
    made: dict[tuple, Exported] = {}

    def get(bits, scheme="ours", values=64, samples=1500) -> Exported:
        key = (bits, scheme, values, samples)
        if key not in made:
            from quant_models.pipeline import export_trained, get_trained_model

            exp = small_experiment(bits, scheme, values, samples)
            trained = get_trained_model(exp)
            out = tmp_path_factory.mktemp(f"export-{scheme}-{bits}")
            made[key] = Exported(exp, trained, export_trained(exp, trained, out))
        return made[key]

    return get
