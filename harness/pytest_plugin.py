"""pytest plugin (entry point ``pytest11``): run hilbench benchmarks from pytest.

Options: ``--hil-device NAME`` (device profile for every node), ``--hil-experiment FILE``
(default experiments/smoke.yaml), ``--hil-db FILE`` (results database), ``--hil-samples N``,
``--hil-study FILE`` (one test per point of a study: the point is run as ``hilbench study`` runs
it, recorded as a study point in the results database, and fails with the point's reason).
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
    group.addoption("--hil-study", default=None, help="a study file: one test per point")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil_hardware: needs --hil-device; skipped without it")
    config.stash[_OPTIONS] = {
        "device": config.getoption("--hil-device"), "experiment": config.getoption("--hil-experiment"),
        "db": config.getoption("--hil-db"), "samples": config.getoption("--hil-samples"),
        "study": config.getoption("--hil-study"),
    }


class StudyPointItem(pytest.Item):
    """One point of ``--hil-study``: trained (or from the cache), run on its devices or on the
    host, and recorded in the results database like a point of ``hilbench study``."""

    def __init__(self, *, plan, db: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.db = db

    def runtest(self) -> None:
        from harness.store.results import ResultsStore
        from harness.study import StudyTask, run_task

        store = ResultsStore(self.db)
        result = run_task(StudyTask([self.plan]), str(store.path))[0]
        store.set_study_point(self.plan.study, result["key"], result["status"], result["reason"], result["row"],
                              result["wall_s"])
        for key in ("accuracy", "golden_accuracy", "bitexact_rate", "bits_per_inference", "run_id", "basis"):
            if key in result["row"]:
                self.user_properties.append((f"hil_{key}", result["row"][key]))
        if result["status"] != "complete":
            raise StudyPointFailed(result["reason"])
        row = result["row"]
        if self.plan.on_device and row["bitexact_rate"] != 1.0:
            raise StudyPointFailed(f"device codes differ from golden: bit-exact rate {row['bitexact_rate']}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, StudyPointFailed):
            return f"study point {self.plan.label}: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"study point {self.plan.label}"


class StudyPointFailed(Exception):
    """A study point that did not complete, or whose device codes are not golden."""


def _study_items(session: pytest.Session, config: pytest.Config) -> list[pytest.Item]:
    from harness.config.studies import load_study
    from harness.core.errors import HilbenchError
    from harness.store.results import ResultsStore
    from harness.study import plan_study

    options = config.stash[_OPTIONS]
    try:
        study = load_study(options["study"])
        plans = plan_study(study)
    except HilbenchError as exc:
        raise pytest.UsageError(f"--hil-study: {exc}") from exc
    ResultsStore(options["db"]).put_study_points(study.name, [(p.position, p.key, p.label, p.overrides)
                                                              for p in plans])
    return [StudyPointItem.from_parent(session, name=f"{study.name}[{p.label}]", plan=p, db=options["db"])
            for p in plans]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash[_OPTIONS]["study"]:
        items.extend(_study_items(session, config))
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
    with open_node_target(hil_device, model.node_models[0], model.directory) as target:
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
