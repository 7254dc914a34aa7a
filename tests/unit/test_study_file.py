"""Study files: product, zip and exclude semantics, dotted overrides, errors naming file, point and
field; planning a study validates its devices before anything trains."""
from pathlib import Path

import pytest

from harness.config.studies import expand, load_study, MatrixSpec
from harness.core.errors import ConfigError
from harness.study import plan_study, schedule

REPO = Path(__file__).resolve().parents[2]


def _study(tmp_path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text((REPO / "experiments" / "smoke.yaml").read_text())
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_product_zip_and_exclude():
    matrix = MatrixSpec(product={"code.values": [32, 64], "code.bits": [2, 4]},
                        zip={"scheme": ["ours", "fdml"], "training.seed": [0, 1]})
    points = expand(matrix, [{"code.values": 32, "code.bits": 2}])
    assert len(points) == 2 * 2 * 2 - 2
    assert points[0] == {"code.values": 32, "code.bits": 4, "scheme": "ours", "training.seed": 0}
    assert {"code.values": 64, "code.bits": 2, "scheme": "fdml", "training.seed": 1} in points
    assert all(not (p["code.values"] == 32 and p["code.bits"] == 2) for p in points)


def test_include_adds_points_after_the_matrix(tmp_path):
    study = load_study(_study(tmp_path, "name: s\nbase: base.yaml\nmatrix: {product: {code.bits: [2, 4]}}\n"
                                        "include: [{scheme: centralized, code.values: 784, code.bits: 8}]\n"))
    assert [p.label for p in study.points] == ["code.bits=2", "code.bits=4",
                                               "scheme=centralized,code.values=784,code.bits=8"]
    assert study.points[-1].experiment.scheme == "centralized" and study.varied == ["code.bits", "scheme", "code.values"]


def test_points_are_experiments_with_their_overrides(tmp_path):
    study = load_study(_study(tmp_path, """
name: s
base: base.yaml
matrix:
  product: {code.values: [32, 64], encoder.layers: [[{conv: {channels: 8}}, {maxpool: 2}]]}
run: {samples: 10}
"""))
    assert [p.label for p in study.points] == [
        'code.values=32,encoder.layers=[{"conv":{"channels":8}},{"maxpool":2}]',
        'code.values=64,encoder.layers=[{"conv":{"channels":8}},{"maxpool":2}]']
    exp = study.points[1].experiment
    assert exp.code.values == 64 and exp.encoder.layers[0].conv.channels == 8 and exp.code.bits == 4
    assert exp.name == f"s[{study.points[1].label}]" and study.varied == ["code.values", "encoder.layers"]


@pytest.mark.parametrize("text, message", [
    ("name: s\nbase: base.yaml\nmatrix: {product: {code.bits: [4, 5]}}\n",
     r"study.yaml point code.bits=5: field 'code.bits': q = 5 is not supported"),
    ("name: s\nbase: base.yaml\nmatrix: {product: {code.colour: [red]}}\n",
     r"point code.colour=red: field 'code.colour': unknown field"),
    ("name: s\nbase: base.yaml\nmatrix: {zip: {code.bits: [2, 4], code.values: [32]}}\n",
     r"study.yaml: field 'matrix.zip': zip fields vary together"),
    ("name: s\nmatrix: {product: {code.bits: [2]}}\n", r"either as 'base' \(a file\) or as 'experiment'"),
    ("name: s\nbase: base.yaml\nmatrix: {product: {code.bits: [2]}}\nexclude: [{scheme: fdml}]\n",
     r"field 'exclude.0': names fields the matrix does not vary: \['scheme'\]"),
    ("name: s\nbase: base.yaml\nmatrix: {product: {code.bits: [2]}}\nexclude: [{code.bits: 2}]\n",
     r"leave no point to run"),
    ("name: s\nbase: nothere.yaml\n", r"nothere.yaml: cannot read an experiment file"),
    ("name: s\nbase: base.yaml\nrun: {samples: 0}\n", r"field 'run.samples'"),
])
def test_bad_study_files_name_file_point_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_study(_study(tmp_path, text))


def test_planning_checks_every_device_before_training(tmp_path):
    study = load_study(_study(tmp_path, "name: s\nbase: base.yaml\nmatrix: {product: {code.bits: [4, float]}}\n"
                                        "run: {nodes_device: nosuch}\n"))
    with pytest.raises(ConfigError, match=r"study.yaml: field 'run.nodes_device': unknown device 'nosuch'"):
        plan_study(study)


def test_points_sharing_a_model_form_one_task_and_done_points_are_skipped(tmp_path):
    study = load_study(_study(tmp_path, """
name: s
base: base.yaml
matrix: {product: {code.bits: [2, float], devices.nodes: [stm32f405-qemu, mps2-an386-qemu]}}
run: {samples: 5}
"""))
    plans = plan_study(study)
    assert [(p.on_device, p.emulated_boards) for p in plans] == [(True, 4), (True, 4), (False, 0), (False, 0)]
    assert len({p.key for p in plans}) == 4  # the devices are part of a point's identity
    tasks = schedule(plans, done=set())
    assert sorted(len(t.points) for t in tasks) == [2, 2]  # one model per q, run on both boards
    assert [len(t.points) for t in schedule(plans, done={plans[0].key, plans[2].key})] == [1, 1]


@pytest.mark.parametrize("name", ["table1-wind.yaml", "paper-fig3.yaml", "smoke.yaml"])
def test_a_planned_point_is_the_same_experiment_in_its_worker(name):
    """Workers parse a point's experiment back from its plan: it must be the same experiment (an
    LSTM point's full dump, with the CNN defaults it excludes, did not parse at all)."""
    from harness.study import _experiment_of

    for plan in plan_study(load_study(REPO / "experiments" / "studies" / name)):
        assert _experiment_of(plan).content_hash() == plan.model_key
