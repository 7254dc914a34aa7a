#!/usr/bin/env bash
# The main job: set up, run the paper experiment end to end on 4 emulated STM32F405 nodes over
# the whole 2,000-image MNIST test split, and write the report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/hilbench run experiments/paper-mnist.yaml
.venv/bin/hilbench report --out results/paper-mnist
echo "report: $(pwd)/results/paper-mnist/report.html"
