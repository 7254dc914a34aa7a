"""Where hilbench keeps things outside the repository (datasets, trained models, built firmware)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """Root of hilbench's caches: ``$HILBENCH_CACHE`` or ``~/.cache/hilbench``."""
    env = os.environ.get("HILBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hilbench"


def dataset_cache() -> Path:
    return cache_root() / "datasets"


def npm_cache() -> Path:
    """Where the setup step puts npm package tarballs (``npm pack``)."""
    return cache_root() / "npm"


def model_cache() -> Path:
    """Content-addressed cache of trained models (see :mod:`quant_models.cache`)."""
    env = os.environ.get("HILBENCH_MODEL_CACHE")
    return Path(env).expanduser() if env else cache_root() / "models"


def results_dir() -> Path:
    return REPO_ROOT / "results"
