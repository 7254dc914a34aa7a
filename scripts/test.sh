#!/usr/bin/env bash
# The test suite: set up, then pytest (unit, real-data training/export, emulated hardware).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
