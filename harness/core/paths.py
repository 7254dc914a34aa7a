"""Where hilbench's files are: the shipped device files in the repository (firmware sources,
profiles, the Linux runner) and the caches outside it (datasets, trained models, built firmware).

Every path into ``devices/`` is spelled here once; other modules import these names.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICES_DIR = REPO_ROOT / "devices"

SHIPPED_PROFILES = DEVICES_DIR / "profiles"
SHIPPED_RADIOS = DEVICES_DIR / "radios"
RUNNER_SOURCE = DEVICES_DIR / "runner" / "hil_runner.py"
INT_LSTM_RUNNER_SOURCE = DEVICES_DIR / "runner" / "hil_int_lstm.py"  # imported by the runner for LSTM nodes
EMULATOR_ASSETS = DEVICES_DIR / "emulators"

FIRMWARE_DIR = DEVICES_DIR / "firmware"
FIRMWARE_SRC = FIRMWARE_DIR / "src"
FIRMWARE_INCLUDE = FIRMWARE_DIR / "include"
FIRMWARE_KERNELS = FIRMWARE_DIR / "kernels"
FIRMWARE_BOARDS = FIRMWARE_DIR / "boards"
FIRMWARE_STARTUP = FIRMWARE_SRC / "cortexm"
KERNEL_SOURCES = (FIRMWARE_KERNELS / "hil_kernels.c", FIRMWARE_KERNELS / "hil_lstm.c")
"""C sources of the integer kernels the generated model code calls (host tests and firmware); the
linker drops the functions a model does not call."""
KERNEL_INCLUDE_DIRS = (FIRMWARE_INCLUDE, FIRMWARE_KERNELS)

USER_CONFIG = Path.home() / ".config" / "hilbench"


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


FIRMWARE_SOURCE_SUFFIXES = (".c", ".h", ".ld")


def firmware_source_digest() -> str:
    """A digest of every firmware source (C, headers, linker scripts) under devices/firmware."""
    h = hashlib.sha256()
    for path in sorted(p for p in FIRMWARE_DIR.rglob("*") if p.is_file() and p.suffix in FIRMWARE_SOURCE_SUFFIXES):
        h.update(str(path.relative_to(FIRMWARE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def device_code_digest() -> str:
    """What runs on the devices besides the model: the firmware sources and the Linux runner. A
    run measured with other device code is another run (its counts and timings differ)."""
    runner = b"".join(path.read_bytes() for path in (RUNNER_SOURCE, INT_LSTM_RUNNER_SOURCE))
    return hashlib.sha256(f"{firmware_source_digest()}\n".encode() + runner).hexdigest()
