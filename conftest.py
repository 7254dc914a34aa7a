"""Root conftest: isolated caches for trained models; the dataset cache is the real one."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_model_cache(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HILBENCH_MODEL_CACHE", str(tmp_path_factory.mktemp("model-cache")))
    yield
    mp.undo()
