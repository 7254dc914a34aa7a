"""pytest plugin (entry point ``pytest11``): run hilbench benchmarks from pytest.

Options: ``--hil-device NAME`` (device profile for every node), ``--hil-experiment FILE``
(default experiments/smoke.yaml), ``--hil-db FILE`` (results database), ``--hil-samples N``.
Marker ``hil_hardware``: the test needs ``--hil-device`` and is skipped without it.
Fixtures: ``hil_device`` (the profile), ``hil_experiment``, ``hil_store``, ``hil_target`` (node 0
of the experiment deployed on the device) and ``hil_run`` (run the experiment on the device;
the run is recorded in the results database and its summary attached to the test report).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.store.summary import RunSummary
    from quant_models.experiment import Experiment

_OPTIONS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hilbench", "hardware-in-the-loop benchmarks")
    group.addoption("--hil-device", default=None, help="device profile to run hil_hardware tests on")
    group.addoption("--hil-experiment", default="experiments/smoke.yaml", help="experiment file for hil fixtures")
    group.addoption("--hil-db", default=None, help="results database (default: results/hilbench.sqlite)")
    group.addoption("--hil-samples", type=int, default=50, help="test samples per hil_run (default 50)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil_hardware: needs --hil-device; skipped without it")
    config.stash[_OPTIONS] = {
        "device": config.getoption("--hil-device"), "experiment": config.getoption("--hil-experiment"),
        "db": config.getoption("--hil-db"), "samples": config.getoption("--hil-samples"),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash[_OPTIONS]["device"]:
        return
    skip = pytest.mark.skip(reason="hil_hardware: no device given (use --hil-device NAME)")
    for item in items:
        if "hil_hardware" in item.keywords:
            item.add_marker(skip)


def _options(request: pytest.FixtureRequest) -> dict:
    return request.config.stash[_OPTIONS]


@pytest.fixture(scope="session")
def hil_device(request: pytest.FixtureRequest):
    from harness.config.profiles import get_profile

    name = _options(request)["device"]
    if not name:
        pytest.skip("no device given (use --hil-device NAME)")
    return get_profile(name)


@pytest.fixture(scope="session")
def hil_experiment(request: pytest.FixtureRequest):
    from quant_models.experiment import load_experiment

    return load_experiment(Path(_options(request)["experiment"]))


@pytest.fixture(scope="session")
def hil_store(request: pytest.FixtureRequest):
    from harness.store.results import ResultsStore

    return ResultsStore(_options(request)["db"])


@pytest.fixture
def hil_target(hil_device, hil_experiment):
    """Node 0 of the experiment's model, deployed on the device (a NodeTarget)."""
    from harness.targets.contract import open_node_target
    from quant_models.pipeline import get_exported

    model = get_exported(hil_experiment)
    with open_node_target(hil_device, model.encoders[0], model.directory) as target:
        yield target


@pytest.fixture
def hil_run(request: pytest.FixtureRequest, hil_device, hil_experiment, hil_store, record_property):
    """``hil_run(samples=None, experiment=None) -> summary``: a recorded run on the device."""
    from harness.run import RunOptions, run_experiment

    def run(samples: int | None = None, experiment: Experiment | None = None) -> RunSummary:
        options = RunOptions(nodes_device=hil_device.name, samples=samples or _options(request)["samples"])
        summary = run_experiment(experiment or hil_experiment, hil_store, options)
        record_property("hil_run_id", summary["run_id"])
        record_property("hil_accuracy", summary["accuracy"])
        return summary

    return run
