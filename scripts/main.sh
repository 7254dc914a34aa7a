#!/usr/bin/env bash
# The main job: set up, then run the paper experiment end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/hilbench train experiments/paper-mnist.yaml
.venv/bin/hilbench export experiments/paper-mnist.yaml --out results/paper-mnist/export
